import json
import unittest

from handler import handler


class HandlerTest(unittest.TestCase):
    def test_health(self):
        self.assertEqual(json.loads(handler({"rawPath": "/health"}, None)["body"]), {"ok": True})

    def test_greeting(self):
        answer = handler({"rawPath": "/greeting", "queryStringParameters": {"name": "ada"}}, None)
        self.assertEqual(json.loads(answer["body"])["greeting"], "hello, ada")


if __name__ == "__main__":
    unittest.main()
