// QuickJS with --std: JSON, the std and os modules on the preopened directory, and the exit status.
const data = { name: "haven", list: [1, 2, 3], nested: { ok: true } };
console.log("json", JSON.stringify(data));
console.log("parse", JSON.parse('{"a":[1,{"b":null}]}').a[1].b === null);
console.log("math", Math.max(3, 7, 5), (0.1 + 0.2).toFixed(2), 2 ** 53);
console.log("args", JSON.stringify(scriptArgs.slice(1)));
console.log("env", std.getenv("APP_MODE"));

const f = std.open("/sandbox/out.txt", "w");
f.puts("written by quickjs\n");
f.close();
console.log("read back", std.loadFile("/sandbox/out.txt").trim());
os.mkdir("/sandbox/dir");
os.rename("/sandbox/out.txt", "/sandbox/dir/moved.txt");
const [names, err] = os.readdir("/sandbox/dir");
console.log("readdir", err, JSON.stringify(names.filter((n) => n[0] !== ".").sort()));
const [st] = os.stat("/sandbox/dir/moved.txt");
console.log("size", st.size);
console.log("missing", std.open("/sandbox/nope.txt", "r") === null);
console.log("date", new Date(Date.UTC(2024, 1, 29)).toISOString());
console.log("now is after 2020", Date.now() > 1577836800000);
std.exit(5);
