# corral's default agent image. Built by `corral image build` (corral/sandbox/images.py) from a
# context that holds only this file and the Claude Code binary `claude`, taken from the installed
# claude-agent-sdk wheel. No registry: the base is corral/base:bookworm, a `docker import` of a
# debootstrap tree. Team images should start FROM corral/base:bookworm too and carry the same label.
FROM corral/base:bookworm

ARG CLAUDE_CODE_VERSION

# git and Python with pytest are what agents and `[checks].command` use; socat is the in-container
# bridge from 127.0.0.1 ports to the run's unix sockets; ripgrep is what Claude Code's Grep/Glob run.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git python3 python3-pytest socat ripgrep procps \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

RUN useradd --uid 1000 --user-group --create-home --home-dir /home/agent --shell /bin/bash agent \
 && chmod 0700 /home/agent \
 && mkdir -p /workspace /run/corral \
 && chown agent:agent /workspace

# No setuid or setgid file is left, so `su`, `passwd` and friends cannot raise privileges even before
# no-new-privileges and the dropped capabilities apply.
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +

# The binary keeps the wheel's 0755 mode; a chmod in a later layer would copy all 400 MB again.
COPY claude /usr/local/bin/claude
RUN /usr/local/bin/claude --version

LABEL io.corral.image="agent" \
      io.corral.claude-code="${CLAUDE_CODE_VERSION}"

ENV HOME=/home/agent \
    USE_BUILTIN_RIPGREP=0
USER 1000:1000
WORKDIR /workspace
CMD ["sleep", "infinity"]
