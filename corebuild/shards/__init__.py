"""Where a build's bytes go: storage (a local directory or gs://), the shard schema derived from
the record, the shard writer, work units and their completion markers, the manifest, the cache."""
