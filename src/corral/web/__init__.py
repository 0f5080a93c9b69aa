"""`corral server`: the reviewer's dashboard (server-rendered, Jinja2) and the run API under /api."""
