"""Playbooks bundled with corral (YAML files; see corral.model.playbook)."""
