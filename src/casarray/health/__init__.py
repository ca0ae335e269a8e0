"""Health checks: rise/fall state (state.py), the verdict on a response (verdict.py), the checker (checker.py)."""
