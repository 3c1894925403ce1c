"""Print how round robin spreads 1,000 picks over four endpoints (one quiesced)."""

from collections import Counter

from lbcore import Endpoint, make_balancer

endpoints = [Endpoint(f"10.0.0.{i}", 8080) for i in range(1, 4)]
endpoints.append(Endpoint("10.0.0.4", 8080, weight=0))  # quiesced: no new connections

balancer = make_balancer("rr", endpoints)
counts = Counter(balancer.pick().address for _ in range(1000))
for endpoint in endpoints:
    n = counts[endpoint.address]
    print(f"{endpoint.address:>15}  {n:4d}  {'#' * (n // 10)}")
