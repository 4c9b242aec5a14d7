# Ruby with its standard library: json, files in the preopened directory, and the exit status.
require "json"
require "digest"
require "set"

data = { "name" => "haven", "list" => [1, 2, 3] }
puts "json #{JSON.generate(data)}"
puts "parse #{JSON.parse('{"a":[1,{"b":null}]}')["a"][1]["b"].inspect}"
puts "args #{ARGV.inspect}"
puts "env #{ENV["APP_MODE"]}"
puts "digest #{Digest::SHA256.hexdigest("haven")}"
puts "set #{Set[3, 1, 2].sort.inspect}"
puts "bignum #{2**100}"
Dir.mkdir("/sandbox/dir")
File.write("/sandbox/out.txt", "written by ruby\n")
File.rename("/sandbox/out.txt", "/sandbox/dir/moved.txt")
puts "children #{Dir.children("/sandbox/dir").sort.inspect}"
puts "read back #{File.read("/sandbox/dir/moved.txt").strip}"
puts "size #{File.size("/sandbox/dir/moved.txt")}"
puts "missing #{File.exist?("/sandbox/nope.txt")}"
puts "time #{Time.at(1_700_000_000).utc.strftime("%Y-%m-%d %H:%M:%S")}"
puts "now is after 2020 #{Time.now.to_i > 1_577_836_800}"
$stderr.puts "to stderr"
exit 4
