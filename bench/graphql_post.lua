-- wrk script: POST one GraphQL request body, over and over, and count failures.
--
--   WRK_BODY=/path/body.json WRK_TOKEN=rg_... wrk -t1 -c16 -d15s -s bench/graphql_post.lua URL
--
-- WRK_BODY is a file holding the JSON request body; WRK_TOKEN (optional) is sent as
-- `Authorization: Bearer <token>`. A response that is not HTTP 200, or whose body holds
-- a GraphQL "errors" member, counts as an error. `done` prints one line starting with
-- WRKJSON: the figures bench/vs_postgraphile.py reads (latencies in microseconds).

local f = assert(io.open(assert(os.getenv("WRK_BODY"), "WRK_BODY is not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
local token = os.getenv("WRK_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  graphql_errors = 0
  non_200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non_200 = non_200 + 1
  elseif string.find(body, '"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
  end
end

function done(summary, latency, requests)
  local gql, bad = 0, 0
  for _, thread in ipairs(threads) do
    gql = gql + thread:get("graphql_errors")
    bad = bad + thread:get("non_200")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "non_200": %d, ' ..
    '"graphql_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write,
    e.timeout, bad, gql))
end
