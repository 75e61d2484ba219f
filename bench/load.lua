-- wrk script of bench/load.py: POST pre-built bodies (.npy ids, or ids.npy + grads.npy back to
-- back) in turn, every request built once in init(); done() prints one JSON line of figures.
--
--   wrk -t1 -c8 -d2s -s bench/load.lua http://127.0.0.1:PORT -- PATH BODIES_FILE BODY_BYTES TOKEN
--
-- BODIES_FILE holds the bodies back to back, each BODY_BYTES long; TOKEN "-" sends none.

local requests = {}
local turn = 1

function init(args)
  local path, file, size, token = args[1], args[2], tonumber(args[3]), args[4]
  local handle = assert(io.open(file, "rb"))
  local data = handle:read("*a")
  handle:close()
  local headers = { ["Content-Type"] = "application/x-npy" }
  if token ~= "-" then
    headers["Authorization"] = "Bearer " .. token
  end
  for start = 1, #data, size do
    requests[#requests + 1] = wrk.format("POST", path, headers, data:sub(start, start + size - 1))
  end
end

function request()
  local next_request = requests[turn]
  turn = turn % #requests + 1
  return next_request
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
