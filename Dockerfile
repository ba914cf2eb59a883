# Propylon gateway image: slim Python, non-root, `propylon run` by default.
#   docker build -t propylon .                        # the gateway
#   docker build --build-arg WITH_WAF=true -t propylon:waf .   # + ModSecurity v3 and the CRS
# The same image runs `propylon control` and `propylon proxy` (deploy/helm, deploy/kustomize).
FROM python:3.11-slim AS build
# a C compiler and libyaml's headers: the wheel carries the compiled hot path (mypyc) and the
# YAML module (propylon/config/_libyaml.c); without them it would be pure Python
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libyaml-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md setup.py ./
COPY propylon ./propylon
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG WITH_WAF=false
# libyaml-0-2: the library the YAML module links
RUN apt-get update \
    && apt-get install -y --no-install-recommends libyaml-0-2 \
    && if [ "$WITH_WAF" = "true" ]; then \
        apt-get install -y --no-install-recommends libmodsecurity3 modsecurity-crs; \
    fi \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 propylon \
    && useradd --system --uid 10001 --gid propylon --home-dir /var/lib/propylon \
       --create-home --shell /usr/sbin/nologin propylon \
    && mkdir -p /etc/propylon /var/cache/propylon \
    && chown propylon:propylon /var/cache/propylon
USER 10001:10001
WORKDIR /var/lib/propylon
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# 8080: a listener of the configuration; 9901: the admin listener (/ready, /live, /metrics)
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/ready', timeout=2).status != 200)"]
ENTRYPOINT ["propylon"]
# a ConfigMap mounted at /etc/propylon is read once (not from its ..data copies) and watched:
# its updates reload without a restart
CMD ["run", "/etc/propylon", "--admin", "0.0.0.0:9901"]
