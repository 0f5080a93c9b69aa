"""The reasoning core (L/02): how a sandboxed Claude Code reaches a model.

- `playbook`  load and validate playbooks (the scripted model's script).
- `scripted`  an Anthropic Messages API server that plays a playbook (`scripted_app`).
- `proxy`     the host-side model proxy: run token, model pinning, key injection, recording.
- `request_filter`  what the proxy lets through to the upstream (no server tools, URLs, MCP servers).
- `sse`       SSE parsing and response reassembly, shared by the proxy and tests.
- `budget`    the run's model budget the proxy enforces (requests, tokens, cost, concurrency).

Nothing is imported here, so `import corral.model.playbook` stays light.
"""
