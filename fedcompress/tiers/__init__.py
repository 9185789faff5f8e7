"""Device tiers on the server: training the tiers, and delivering a model made for each device's budget."""
