import importlib.util
import json
import unittest
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_handler", SRC / name / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HandlersTest(unittest.TestCase):
    def test_api_health(self):
        body = json.loads(load("api").handler({"rawPath": "/health"}, None)["body"])
        self.assertTrue(body["ok"])

    def test_worker_reports_a_bad_message(self):
        answer = load("worker").handler({"Records": [{"messageId": "m1", "body": "{"}]}, None)
        self.assertEqual(answer["batchItemFailures"], [{"itemIdentifier": "m1"}])


if __name__ == "__main__":
    unittest.main()
