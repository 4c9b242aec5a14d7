"""sqlite3 on a database file in the preopened directory: schema, inserts, a transaction, queries."""

import sqlite3

DB = "/sandbox/app.db"


def main() -> None:
    con = sqlite3.connect(DB)
    con.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)")
    con.executemany(
        "INSERT INTO item (name, price) VALUES (?, ?)",
        [(f"item-{i:04d}", (i * 37 % 1000) / 10) for i in range(1000)],
    )
    con.commit()
    with con:
        con.execute("UPDATE item SET price = price * 2 WHERE id % 10 = 0")
    try:
        with con:
            con.execute("DELETE FROM item")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    count, total = con.execute("SELECT count(*), round(sum(price), 2) FROM item").fetchone()
    print("rows", count, "total", total)
    print("top", con.execute("SELECT name, price FROM item ORDER BY price DESC, id LIMIT 3").fetchall())
    con.execute("CREATE INDEX item_price ON item(price)")
    print("plan", [r[3] for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM item WHERE price > 99")])
    print("integrity", con.execute("PRAGMA integrity_check").fetchone()[0])
    con.close()
    again = sqlite3.connect(DB)
    print("reopened", again.execute("SELECT count(*) FROM item").fetchone()[0])
    again.close()


main()
