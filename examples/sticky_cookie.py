"""Sticky sessions keyed by a cookie value, over Maglev-style consistent hashing.

A web tier routes each request by its session cookie.  `affinity_timeout` keeps a
session on its endpoint while it is used at least every 30 minutes; when an endpoint
leaves, only the sessions that were on it move, and a failed endpoint's sessions move at
once.  Prints what happens to 1,000 sessions.

    python examples/sticky_cookie.py
"""

from collections import Counter

from lbcore import Endpoint, make_balancer

endpoints = [Endpoint(f"10.1.0.{i}", 8080) for i in range(1, 6)]
balancer = make_balancer("mh", endpoints, affinity_timeout=1800)

cookies = [f"session-{n:04d}" for n in range(1000)]
placed = {cookie: balancer.pick(cookie) for cookie in cookies}
print(f"{len(cookies)} sessions over {len(endpoints)} endpoints (Maglev + affinity):")
for endpoint, n in sorted(Counter(placed.values()).items(), key=lambda item: item[0].ip):
    print(f"  {endpoint.address:>15} {n:4d}")

again = sum(balancer.pick(cookie) == placed[cookie] for cookie in cookies)
print(f"requests that came back to their endpoint: {again} of {len(cookies)}")

leaving = endpoints[2]
balancer.update([e for e in endpoints if e != leaving])
moved = [cookie for cookie in cookies if balancer.pick(cookie) != placed[cookie]]
print(f"{leaving.address} removed: {len(moved)} sessions moved, "
      f"all of them from {leaving.address}: {all(placed[c] == leaving for c in moved)}")

failing = endpoints[0]
balancer.mark_failed(failing)  # passive health, as the forwarder does on a refused connect
after = {cookie: balancer.pick(cookie) for cookie in cookies}
print(f"{failing.address} failed: none of its sessions stayed on it: "
      f"{all(after[c] != failing for c in cookies)}")
