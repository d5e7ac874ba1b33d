-- POST of one 10,000-line body (?batch=lines): 10,000 items of 16 bytes per request.
local lines = {}
for i = 0, 9999 do
  lines[#lines + 1] = string.format("work-item-%06d\n", i)
end
wrk.method = "POST"
wrk.body = table.concat(lines)
wrk.headers["Content-Type"] = "text/plain"
