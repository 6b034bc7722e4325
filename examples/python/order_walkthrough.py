"""Runs one order through the order system with stubs generated from proto/.

Creates a product and an order, places it, follows it with WatchOrder until the saga has
confirmed it, then prints its history. Expects command-service, query-service and
saga-service on their default ports (override with COMMAND_ADDR, QUERY_ADDR, SAGA_ADDR).

Generate the stubs first, as README.md says.
"""

import json
import os
import sys
import uuid

# Stubs generated as README.md says.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "generated"))

import grpc  # noqa: E402

from orders.v1 import command_service_pb2 as commands  # noqa: E402
from orders.v1 import command_service_pb2_grpc as command_grpc  # noqa: E402
from orders.v1 import common_pb2 as common  # noqa: E402
from orders.v1 import query_service_pb2 as queries  # noqa: E402
from orders.v1 import query_service_pb2_grpc as query_grpc  # noqa: E402
from orders.v1 import saga_service_pb2 as sagas  # noqa: E402
from orders.v1 import saga_service_pb2_grpc as saga_grpc  # noqa: E402


def new_id() -> str:
    return str(uuid.uuid4())


def main() -> int:
    command = command_grpc.CommandServiceStub(grpc.insecure_channel(os.environ.get("COMMAND_ADDR", "localhost:50051")))
    query = query_grpc.QueryServiceStub(grpc.insecure_channel(os.environ.get("QUERY_ADDR", "localhost:50052")))
    saga = saga_grpc.SagaServiceStub(grpc.insecure_channel(os.environ.get("SAGA_ADDR", "localhost:50053")))

    # A product of our own, so the example never runs out of stock.
    sku = "PY-" + uuid.uuid4().hex[:8].upper()
    price = common.Money(amount_minor=799, currency="EUR")
    command.CreateProduct(
        commands.CreateProductRequest(command_id=new_id(), sku=sku, name="Python mug", price=price, initial_stock=10)
    )
    print(f"created product {sku}")

    order_id = new_id()
    command.CreateOrder(
        commands.CreateOrderRequest(
            command_id=new_id(),
            order_id=order_id,
            customer_id=new_id(),
            currency="EUR",
            lines=[common.OrderLine(sku=sku, quantity=3, unit_price=price)],
        )
    )
    placed = command.PlaceOrder(
        commands.PlaceOrderRequest(command_id=new_id(), order_id=order_id, payment_method="card")
    )
    print(f"placed order {order_id}: total {placed.total.amount_minor} {placed.total.currency}")

    # Follow the order until the saga has confirmed it (the stream would go on until the
    # order ships, so we stop listening once it is confirmed).
    watch = query.WatchOrder(
        queries.WatchOrderRequest(order_id=order_id, consistency_token=placed.result.consistency_token),
        timeout=30,
    )
    for update in watch:
        order = update.order
        print(f"  version {order.version}: {order.status} (stock {order.stock_status}, payment {order.payment_status})")
        if order.status in ("confirmed", "cancelled"):
            watch.cancel()
            break

    state = saga.GetSaga(sagas.GetSagaRequest(order_id=order_id)).saga
    print(f"saga {state.state}: " + ", ".join(f"{s.name} {s.status}" for s in state.steps))

    history = query.GetOrderHistory(queries.GetOrderHistoryRequest(order_id=order_id))
    print("history:")
    for event in history.events:
        payload = json.loads(event.payload_json)
        payload.pop("schema_version", None)
        print(f"  v{event.version} {event.event_type} {json.dumps(payload, sort_keys=True)}")

    if order.status != "confirmed" or state.state != "completed":
        print("the order was not confirmed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
