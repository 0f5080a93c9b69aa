"""`corral shell`: the interactive Claude Code TUI inside a run sandbox, hardened as `corral run`'s.

In interactive mode there is no SDK control channel, so the host's decisions reach Claude Code
through its own command hooks, declared in managed settings that are bound read-only into the
sandbox (`managed`). Each hook runs a small forwarder (`forward.sh`) that sends the hook's JSON over the
run's hook socket to the host (`hooks`), which decides exactly as a headless run's SDK hooks do
(`corral.agent.tool_hooks`). `session` is the run lifecycle with the agent phase replaced by the
human's terminal; `transcripts` keeps the CLI's conversation for `--resume`.
"""
