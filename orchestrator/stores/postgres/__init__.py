"""PostgreSQL adapters: history models, migrations, the store and the batched writer."""
