# corral's default agent image. Built by `corral image build` (corral/sandbox/images.py) from a
# context that holds only this file, nodump.c and the Claude Code binary `claude`, taken from the
# installed claude-agent-sdk wheel. No registry: the base is corral/base:bookworm, a `docker import` of
# a debootstrap tree. Team images should start FROM corral/agent:default, which carries nodump.so and
# the label.

# A throw-away stage compiles the preload library that makes Claude Code non-dumpable (nodump.c), so
# no compiler reaches the agent image.
FROM corral/base:bookworm AS nodump
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev
COPY nodump.c /src/nodump.c
RUN gcc -O2 -Wall -Werror -shared -fPIC -o /src/nodump.so /src/nodump.c

FROM corral/base:bookworm

ARG CLAUDE_CODE_VERSION

# git and Python with pytest are what agents and `[checks].command` use; socat is the in-container
# bridge from 127.0.0.1 ports to the run's unix sockets; ripgrep is what Claude Code's Grep/Glob run.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git python3 python3-pytest socat ripgrep procps \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# uid 1000 runs Claude Code and the agent's tools; uid 1001 runs the socket bridges (socat), which the
# tools then cannot signal or inspect.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/agent --shell /bin/bash agent \
 && useradd --uid 1001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bridge \
 && chmod 0700 /home/agent \
 && mkdir -p /workspace /run/corral \
 && chown agent:agent /workspace

# No setuid or setgid file is left, so `su`, `passwd` and friends cannot raise privileges even before
# no-new-privileges and the dropped capabilities apply.
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +

# The binary keeps the wheel's 0755 mode; a chmod in a later layer would copy all 400 MB again.
COPY claude /usr/local/bin/claude
RUN /usr/local/bin/claude --version
COPY --from=nodump /src/nodump.so /usr/local/lib/corral/nodump.so
RUN LD_PRELOAD=/usr/local/lib/corral/nodump.so /usr/local/bin/claude --version

# Declared this late so that a new recipe hash does not invalidate the cached layers above.
ARG CORRAL_RECIPE
LABEL io.corral.image="agent" \
      io.corral.claude-code="${CLAUDE_CODE_VERSION}" \
      io.corral.recipe="${CORRAL_RECIPE}"

ENV HOME=/home/agent \
    USE_BUILTIN_RIPGREP=0
USER 1000:1000
WORKDIR /workspace
CMD ["sleep", "infinity"]
