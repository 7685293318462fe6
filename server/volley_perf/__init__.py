"""The bundled load generator behind ``volley perf``.

It measures any KServe v2 gRPC server (Volley, Triton, ...) the way ``perf_analyzer`` does:
closed-loop concurrency levels or open-loop request rates, stable measurement windows,
latency percentiles and, when the server has the statistics extension, the server-side
queue and compute time per request.
"""
