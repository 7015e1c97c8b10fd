"""Prometheus metrics (prometheus_client). Labels never carry phone numbers or input."""
from prometheus_client import Counter, Histogram

HOPS = Counter("convo_hops_total", "Inbound hops answered", ["channel", "gateway", "result"])
HOP_SECONDS = Histogram("convo_hop_seconds", "Time to answer one hop", ["channel"],
                        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
BAD_REQUESTS = Counter("convo_bad_requests_total", "Callbacks refused with 4xx", ["endpoint", "status"])
USSD_EVENTS = Counter("convo_ussd_session_events_total", "End-of-session notifications", ["status"])
