"""SirLLM's streaming tasks (grocery, DailyDialog, rock-paper-scissors), the runner that scores cache
policies on them, and compaction of stored memories by salience."""
