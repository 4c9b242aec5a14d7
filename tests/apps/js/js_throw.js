// An uncaught exception: QuickJS prints it on stderr and the command fails.
function inner() {
  throw new TypeError("bad input");
}
console.log("before the error");
inner();
