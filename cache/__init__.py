from cache.sharded import CacheStats, ShardedTTLCache

__all__ = ["CacheStats", "ShardedTTLCache"]
