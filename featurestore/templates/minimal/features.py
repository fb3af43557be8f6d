"""A feature repo: card transactions, keyed by user (`fstore init` wrote it; `fstore apply`).

Edit the definitions, then run `fstore apply` again: a view whose computation changed gets a
new version beside the old one, which keeps serving until you remove it.
"""

from featurestore import Aggregation, Entity, FeatureService, FeatureView, KafkaSource

user = Entity(name="user", join_keys=["user_id"])

transactions = KafkaSource(
    name="transactions",
    topic="transactions",
    timestamp_field="ts",  # ISO 8601 with an offset, or epoch milliseconds
    schema={"user_id": "string", "merchant": "string", "amount": "float64"},
)

user_txn = FeatureView(
    name="user_txn",
    entities=[user],
    source=transactions,
    tile="1m",
    allowed_lateness="5m",
    ttl="1d",
    aggregations=[
        Aggregation(function="count", windows=["10m", "1h", "24h"]),
        Aggregation(column="amount", function="sum", windows=["10m", "1h", "24h"]),
        Aggregation(column="amount", function="mean", windows=["1h", "24h"]),
        Aggregation(column="amount", function="max", windows=["1h", "24h"]),
        Aggregation(column="amount", function="last", windows=["24h"]),
        Aggregation(column="merchant", function="approx_count_distinct", windows=["24h"]),
    ],
)

fraud = FeatureService(
    name="fraud",
    features=[
        "user_txn:count_10m",
        "user_txn:amount_sum_10m",
        "user_txn:amount_max_1h",
        "user_txn:merchant_approx_count_distinct_24h",
    ],
)
