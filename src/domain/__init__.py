"""Pure storage-engine logic: keys, hashing, L1 index, arena accounting, eviction, controllers; no I/O."""
