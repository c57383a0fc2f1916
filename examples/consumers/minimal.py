"""Big-loan alerts: the example of docs/consumer-guide.md (tested by tests/consumer/test_guide.py)."""

import os
from decimal import Decimal

from cdcrouter.consumer import ConsumerApp

TOPIC = os.environ.get("LOAN_TOPIC", "filtered-loan-events")
app = ConsumerApp(os.environ.get("CONSUMER_NAME", "big-loans"), retries=3, backoff=0.5)
book = {"loans": 0, "total": Decimal(0)}


@app.on(TOPIC, event="LoanCreated")
def loan_created(event):
    amount = event.entity.decimal("loan.loanAmount", Decimal(0))
    book["loans"] += 1
    book["total"] += amount
    if amount >= 10_000:
        print(f"big loan {event.entity.entity_id}: {amount} (book: {book['total']})", flush=True)


@app.on(TOPIC, event="LoanPaymentSubmitted")
def payment(event, ctx):
    loan, amount = event.entity.attr("loan_id"), event.entity.attr("amount")
    print(f"payment of {amount} on loan {loan} ({ctx.origin})", flush=True)


if __name__ == "__main__":
    app.run()  # until SIGTERM or Ctrl-C: finishes the batch, commits, leaves the group
