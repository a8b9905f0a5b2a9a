-- wrk script for bench/run.mjs: cycles the request path over many group keys
-- (/groups/g<i>/messages, i in 0..N-1, N = BENCH_KEYS or 1000) so that every shard
-- gets traffic. The requests are formatted once per thread in init(), so the
-- per-request Lua cost is a table lookup.
local n = tonumber(os.getenv("BENCH_KEYS") or "1000")
local reqs = {}
local i = 0

function init(args)
  for k = 0, n - 1 do
    reqs[k] = wrk.format("GET", "/groups/g" .. k .. "/messages")
  end
end

function request()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end
