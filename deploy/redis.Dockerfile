# Redis for the replicas' shared state, from Debian's redis-server package on the gateway
# image's own base, so nothing else has to be pulled (the official `redis:7` image serves as well:
# set `image: redis:7` in compose.yaml instead of building this).
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data
VOLUME ["/data"]
USER redis
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD redis-cli -p 6379 ping | grep -q PONG
# Reachable only on the compose network (the file publishes no Redis port); append-only file
# persistence, so the flags and the audit log survive a Redis restart.
CMD ["redis-server", "--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no", \
     "--dir", "/data", "--appendonly", "yes"]
