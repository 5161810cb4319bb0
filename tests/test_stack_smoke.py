from pymongo.database import Database

from backfill_engine.settings import Settings


def test_secantusdb_and_redis_answer(db: Database, settings: Settings, redis_client) -> None:
    db.probe.insert_one({"_id": 1})
    assert db.probe.find_one({"_id": 1}) == {"_id": 1}
    assert redis_client.ping() is True
    assert settings.mongo_url and settings.mongo_url.startswith("mongodb://127.0.0.1:")
