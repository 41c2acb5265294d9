"""`huxue notifier`: pages people for the alerts on `<prefix>alerts` (issue 11).

- routing.py: alert -> receiver names (pure)
- messages.py: the HTTP request each receiver type gets, signatures (pure)
- policy.py: which answers count as delivered, which are retried, backoff (pure)
- service.py: the process: Kafka in, HTTP out, one record per attempt on `<prefix>notifications`
"""
