"""The fraud demo's feature repo: card transactions by users at merchants (`fstore demo`).

A stolen card shows as a burst: many transactions within minutes, at merchants the user never
visits, for high amounts. The user view sees the burst (counts, sums and maxima over 10 minutes,
distinct merchants over a day, the last amount) against the user's own habits (the 24 h mean);
the merchant view says how busy a merchant is and how large its tickets run, so a model can tell
a risky merchant from a user behaving oddly.

A request-time feature sets the amount being authorized, which only the request knows, against
the user's 24 h mean (`amount_vs_user_mean_24h`); the service `fraud_detection_realtime` adds it
to the windowed features. A model trained on that service takes the amount in each predict
request (`"request": {"amount": [...]}`) and in its training rows (an `amount` column).

`fstore demo` trains a model on each service and prints both holdout AUCs: the windowed
features alone (`fraud_detection`, the production model) and with what `fraud_detection_realtime`
adds — the request-time feature, and any aggregation listed in `richer_user_aggregations` (one
line there puts a feature, say a percentile of amounts, in the "with" model only).

The topic comes from `FRAUD_TOPIC` (default `fraud.transactions`): one repo serves several
environments, and `fstore demo` gives every run a topic of its own.
"""

import os

import numpy as np

from featurestore import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    KafkaSource,
    RequestSource,
    on_demand_feature,
)

user = Entity(name="user", join_keys=["user_id"])
merchant = Entity(name="merchant", join_keys=["merchant_id"])

transactions = KafkaSource(
    name="card_transactions",
    topic=os.environ.get("FRAUD_TOPIC", "fraud.transactions"),
    timestamp_field="ts",  # ISO 8601 with an offset
    schema={"user_id": "string", "merchant_id": "string", "amount": "float64"},
)

user_aggregations = [
    Aggregation(function="count", windows=["10m", "1h", "24h"]),
    Aggregation(column="amount", function="sum", windows=["10m", "1h", "24h"]),
    Aggregation(column="amount", function="mean", windows=["10m", "1h", "24h"]),
    Aggregation(column="amount", function="max", windows=["10m", "1h", "24h"]),
    Aggregation(column="amount", function="last", windows=["24h"]),
    Aggregation(
        column="merchant_id",
        function="approx_count_distinct",
        windows=["24h"],
        name="distinct_merchants",
    ),
]
# Read by the "with" model only (`fraud_detection_realtime`), beside the request-time feature:
# the demo reports the holdout AUC with and without them.
richer_user_aggregations: list[Aggregation] = [
    # The 90th percentile of the user's amounts over the last day: a DDSketch per tile, the
    # same number online and offline (docs/semantics.md).
    Aggregation(column="amount", function="approx_percentile", windows=["24h"], percentiles=[0.9]),
]

user_txn = FeatureView(
    name="user_txn",
    entities=[user],
    source=transactions,
    tile="1m",
    allowed_lateness="5m",
    ttl="1d",
    aggregations=user_aggregations + richer_user_aggregations,
)

merchant_txn = FeatureView(
    name="merchant_txn",
    entities=[merchant],
    source=transactions,
    tile="1m",
    allowed_lateness="5m",
    ttl="1d",
    aggregations=[
        Aggregation(function="count", windows=["1h", "24h"]),
        Aggregation(column="amount", function="mean", windows=["1h", "24h"]),
        Aggregation(column="amount", function="max", windows=["1h"]),
        Aggregation(
            column="user_id",
            function="approx_count_distinct",
            windows=["1h"],
            name="distinct_users",
        ),
    ],
)

# The windowed features without the richer ones: the production model, and the "without".
fraud_detection = FeatureService(
    name="fraud_detection",
    features=[f"user_txn:{name}" for agg in user_aggregations for name in agg.feature_names()]
    + [merchant_txn],
)

card_request = RequestSource(name="card_request", schema={"amount": "float64"})


@on_demand_feature(
    request=[card_request],
    features=["user_txn:amount_mean_24h"],
    outputs={"amount_vs_user_mean_24h": "float64"},
    description="The amount being authorized over the user's 24 h mean (NaN: no history).",
)
def amount_vs_user_mean(inputs):
    mean = inputs["amount_mean_24h"]
    return {"amount_vs_user_mean_24h": inputs["amount"] / np.where(mean > 0, mean, np.nan)}


fraud_detection_realtime = FeatureService(
    name="fraud_detection_realtime",
    features=[user_txn, merchant_txn, "amount_vs_user_mean:amount_vs_user_mean_24h"],
)
