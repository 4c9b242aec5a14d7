# An uncaught exception: Ruby prints it on stderr and exits with status 1.
def inner(value)
  raise ArgumentError, "bad value #{value}"
end

puts "before the error"
inner(42)
