import json
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import handler  # noqa: E402


class HandlerTest(unittest.TestCase):
    def test_an_order_is_served(self):
        answer = handler.handler({"pathParameters": {"id": "o-42"}}, None)
        self.assertEqual(answer["statusCode"], 200)
        self.assertEqual(json.loads(answer["body"])["id"], "o-42")

    def test_no_id_is_a_bad_request(self):
        self.assertEqual(handler.handler({}, None)["statusCode"], 400)


if __name__ == "__main__":
    unittest.main()
