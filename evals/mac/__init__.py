"""MAC's data (project-written personal-fact sessions, LoCoMo sessions) and its comparison runner."""
