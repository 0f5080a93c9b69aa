"""Delivery: what happens to a run after awaiting_approval.

- pr.py:       the pull request corral opens for a run, and its body
- gitmerge.py: the local merge (hardened host git, atomic ref update, never a dirty checkout)
- approve.py:  `corral approve` and `corral deploy promote`: the refusals, the approval, the merge,
               the staged deploy, and recovery of an approval whose process died
- build.py:    a `[deploy] build` in a sandbox on the merged commit (the local deploy's builder)
"""
