"""SirLLM's entropy decay: token surprisal, a bounded streaming KV cache, salience of stored memories."""
