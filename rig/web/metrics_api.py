"""``GET /metrics`` on the internal port: the Prometheus exposition (spec Part B 1.3, 10.1)."""
from prometheus_client.exposition import choose_encoder


async def serve_metrics(metrics, request):
    """Text format 0.0.4 (``text/plain``), or OpenMetrics when the scraper asks for it."""
    await metrics.refresh()
    accept = request.getHeader(b"accept")
    encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
    body = encode(metrics.registry)
    request.setResponseCode(200)
    request.setHeader(b"content-type", content_type.encode("latin-1"))
    return body
