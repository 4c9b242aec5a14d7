"""An uncaught exception: Python prints the traceback on stderr and exits with status 1."""


def inner(value: int) -> float:
    return 10 / value


def outer() -> float:
    return inner(0)


print("before the error")
outer()
