"""Views of finished and running runs, read from their run directories (metrics.jsonl,
summary.json, status.json, config.yaml stay the source of truth). Nothing here imports a
deep-learning framework: listing a thousand runs must take well under a second."""
