"""What the API page (`/docs`) offers to "Try it out" and shows coming back.

The requests are the README's (`docs/examples/*.json`, a test keeps them equal): a simulated customer
of the demo's history, once as usual, once from a new device and country to an address never seen.
The responses are real ones from a `make demo` run, as the README quotes them.
"""

from __future__ import annotations

from typing import Any

USUAL_DEPOSIT: dict[str, Any] = {
    "transaction_id": "tx_demo_0002",
    "event_time": "2026-11-26T21:05:00Z",
    "user_id": "usr_0b921f66186cea69",
    "type": "deposit",
    "asset": "USDC",
    "amount": 90.0,
    "amount_usd": 90.0,
    "payment_method": "bank_transfer",
    "device_id": "dev_dbf841124cec1422",
    "ip_address": "136.147.159.226",
    "country": "IN",
    "channel": "android",
}
UNUSUAL_SEND: dict[str, Any] = {
    "transaction_id": "tx_demo_0001",
    "event_time": "2026-11-26T21:00:00Z",
    "user_id": "usr_0b921f66186cea69",
    "type": "send",
    "asset": "BTC",
    "amount": 0.85,
    "amount_usd": 81250.0,
    "payment_method": "crypto",
    "destination_address": "bc1qfreshaddressneverseen0000000000000000",
    "device_id": "dev_brandnew00000001",
    "ip_address": "185.220.101.7",
    "country": "RU",
    "channel": "web",
}
INVALID = USUAL_DEPOSIT | {"transaction_id": "tx_demo_bad", "amount": -90.0, "ip_address": "not-an-ip"}

REQUESTS: dict[str, dict[str, Any]] = {
    "usual": {
        "summary": "the customer's usual $90 USDC deposit from their own phone (an approval in the demo)",
        "value": USUAL_DEPOSIT,
    },
    "unusual": {
        "summary": "$81k BTC send: new device, new country, never-seen address (a decline in the demo)",
        "value": UNUSUAL_SEND,
    },
    "invalid": {"summary": "a negative amount and a malformed IP address (422 naming both)", "value": INVALID},
}

_FRESH = {"as_of": "2026-11-22T20:08:17Z", "age_seconds": 349003.0}
RESPONSES: dict[str, dict[str, Any]] = {
    "approve": {
        "summary": "the usual deposit: approved, no reasons unless ?explain=true",
        "value": {
            "transaction_id": "tx_demo_0002",
            "score": 0.000022503843904588488,
            "decision": "approve",
            "reason_codes": [],
            "explained": False,
            "model_version": "1",
            "raw_score": -12.13318030543318,
            "base_value": None,
            "other_contribution": None,
            "degraded": False,
            "missing_features": [],
            "feature_freshness": {
                "user_activity": _FRESH,
                "device_activity": _FRESH,
                "ip_activity": _FRESH,
                "account": {"as_of": "2026-01-10T08:52:03Z", "age_seconds": 27691977.0},
            },
        },
    },
    "decline": {
        "summary": "the unusual send: declined, with the three features that pushed the score up most",
        "value": {
            "transaction_id": "tx_demo_0001",
            "score": 0.8158894924649714,
            "decision": "decline",
            "reason_codes": [
                {
                    "code": "amount_usd",
                    "description": "transaction amount in USD",
                    "value": 81250.0,
                    "contribution": 2.798631734895294,
                },
                {
                    "code": "new_country",
                    "description": "new country for this user",
                    "value": 1.0,
                    "contribution": 2.6406199907861114,
                },
                {
                    "code": "new_dest_address",
                    "description": "new destination address for this user",
                    "value": 1.0,
                    "contribution": 1.3488249981645688,
                },
            ],
            "explained": True,
            "model_version": "1",
            "raw_score": 3.167162813185185,
            "base_value": -9.851057888834646,
            "other_contribution": 6.230143978173858,
            "degraded": False,
            "missing_features": ["address_activity", "device_activity", "ip_activity", "address_list"],
            "feature_freshness": {
                "user_activity": {"as_of": "2026-11-22T20:08:17Z", "age_seconds": 348703.0},
                "account": {"as_of": "2026-01-10T08:52:03Z", "age_seconds": 27691677.0},
            },
        },
    },
}

INVALID_RESPONSE: dict[str, dict[str, Any]] = {
    "invalid": {
        "summary": "the invalid example: each field at fault, named",
        "value": {
            "error": "invalid request",
            "fields": [
                {"field": "amount", "message": "Input should be greater than 0"},
                {"field": "ip_address", "message": "Value error, not an IP address: 'not-an-ip'"},
            ],
            "request_id": "c77f56b6c0034d8a",
        },
    }
}
