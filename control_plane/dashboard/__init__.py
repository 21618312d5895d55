"""The admin dashboard: a small single-page app (plain ES modules and CSS, no build step) served at
``/``; it talks only to the public API and ``/api/live``."""
