-- What an image was built from and how, for `image show` and the build cache.
--   digest        the source's content digest (an OCI manifest digest, or the
--                 SHA-256 of an imported file); empty for Debian builds
--   cache_key     the build cache key of the inputs (see internal/image/cache)
--   build_seconds how long the build took (0.0x for a cache hit)
--   cached        1 when the build reused a cached result
--   removed_at    set when `image rm --force` removed an image that VMs still
--                 name: the file is gone (their disks never depended on it),
--                 the row stays so they can say where they came from, and its
--                 name is freed by appending "@<id>"
ALTER TABLE images ADD COLUMN digest TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN cache_key TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN build_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN removed_at TEXT NOT NULL DEFAULT '';
