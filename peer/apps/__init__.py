"""Applications on the log: KV and shell history, with their materialised views.

Above the store and crypto: these modules decrypt payloads and decide what a record
means; the store only keeps the tables (`peer.store.views`).

- `payload`  the JSON body shared by the app payload formats (pure)
- `kv`, `history`  each app's payload format (v1) and its API
- `views`    the catch-up engine: applies new records to the views, per log, in chunks
- `imports`  parsers of bash, zsh, fish and atuin histories (pure, except atuin's file)
"""
