//! The `orders.v1.CommandService` implementation: metadata in, pipeline, response out.

use contracts::orders::v1::{self as pb, command_service_server::CommandService};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, metadata::MetadataValue};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    commands::{Envelope, Outcome},
    edge::{self, Parsed},
    pipeline::Pipeline,
};

/// The request metadata key carrying the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Serves the write API.
pub struct CommandApi {
    pipeline: Pipeline,
}

impl CommandApi {
    /// The API over a pipeline.
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    /// Parses, executes and answers one request; the correlation id goes back in the
    /// response (or error) metadata.
    async fn run<Req, Resp>(
        &self,
        request: Request<Req>,
        command_type: &'static str,
        parse: fn(&Req) -> Result<Parsed, Status>,
        respond: fn(&Outcome) -> Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
    {
        let correlation_id = match request.metadata().get(CORRELATION_HEADER) {
            None => Uuid::new_v4(),
            Some(value) => match value.to_str().ok().and_then(|s| Uuid::try_parse(s).ok()) {
                Some(id) => id,
                None => {
                    return Err(service_runtime::edge::invalid_field(
                        CORRELATION_HEADER,
                        "must be a UUID when present",
                    ));
                }
            },
        };
        let result = self
            .execute(request.into_inner(), correlation_id, command_type, parse)
            .await;
        let header = MetadataValue::try_from(correlation_id.to_string()).ok();
        match result {
            Ok(outcome) => {
                let mut response = Response::new(respond(&outcome));
                if let Some(header) = header {
                    response.metadata_mut().insert(CORRELATION_HEADER, header);
                }
                Ok(response)
            }
            Err(mut status) => {
                if let Some(header) = header {
                    status.metadata_mut().insert(CORRELATION_HEADER, header);
                }
                Err(status)
            }
        }
    }

    async fn execute<Req: Message>(
        &self,
        request: Req,
        correlation_id: Uuid,
        command_type: &'static str,
        parse: fn(&Req) -> Result<Parsed, Status>,
    ) -> Result<Outcome, Status> {
        let parsed = parse(&request)?;
        let mut hasher = Sha256::new();
        hasher.update(command_type.as_bytes());
        hasher.update(request.encode_to_vec());
        let envelope = Envelope {
            command_id: parsed.command_id,
            correlation_id,
            command_type,
            request_hash: hasher.finalize().to_vec(),
            expected_version: parsed.expected_version,
            command: parsed.command,
        };
        let span = tracing::info_span!("command", command = command_type, command_id = %envelope.command_id, %correlation_id);
        Ok(self.pipeline.execute(&envelope).instrument(span).await?)
    }
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn create_order(
        &self,
        r: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        self.run(r, "CreateOrder", edge::create_order, |o| {
            pb::CreateOrderResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn add_order_line(
        &self,
        r: Request<pb::AddOrderLineRequest>,
    ) -> Result<Response<pb::AddOrderLineResponse>, Status> {
        self.run(r, "AddOrderLine", edge::add_order_line, |o| {
            pb::AddOrderLineResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn remove_order_line(
        &self,
        r: Request<pb::RemoveOrderLineRequest>,
    ) -> Result<Response<pb::RemoveOrderLineResponse>, Status> {
        self.run(r, "RemoveOrderLine", edge::remove_order_line, |o| {
            pb::RemoveOrderLineResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn place_order(
        &self,
        r: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        self.run(r, "PlaceOrder", edge::place_order, |o| {
            pb::PlaceOrderResponse {
                result: Some(o.write_result(0)),
                total: o.total(),
            }
        })
        .await
    }

    async fn confirm_order(
        &self,
        r: Request<pb::ConfirmOrderRequest>,
    ) -> Result<Response<pb::ConfirmOrderResponse>, Status> {
        self.run(r, "ConfirmOrder", edge::confirm_order, |o| {
            pb::ConfirmOrderResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn ship_order(
        &self,
        r: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, Status> {
        self.run(r, "ShipOrder", edge::ship_order, |o| {
            pb::ShipOrderResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn cancel_order(
        &self,
        r: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        self.run(r, "CancelOrder", edge::cancel_order, |o| {
            pb::CancelOrderResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn create_product(
        &self,
        r: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        self.run(r, "CreateProduct", edge::create_product, |o| {
            pb::CreateProductResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn restock_product(
        &self,
        r: Request<pb::RestockProductRequest>,
    ) -> Result<Response<pb::RestockProductResponse>, Status> {
        self.run(r, "RestockProduct", edge::restock_product, |o| {
            pb::RestockProductResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }

    async fn reserve_stock(
        &self,
        r: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        self.run(r, "ReserveStock", edge::reserve_stock, |o| {
            pb::ReserveStockResponse {
                products: o.write_results(),
                consistency_token: o.position.to_token(),
            }
        })
        .await
    }

    async fn release_stock(
        &self,
        r: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        self.run(r, "ReleaseStock", edge::release_stock, |o| {
            pb::ReleaseStockResponse {
                products: o.write_results(),
                consistency_token: o.position.to_token(),
            }
        })
        .await
    }

    async fn void_command(
        &self,
        r: Request<pb::VoidCommandRequest>,
    ) -> Result<Response<pb::VoidCommandResponse>, Status> {
        let (command_id, reason) = edge::void_command(r.get_ref())?;
        let span = tracing::info_span!("void", %command_id);
        let voided = self
            .pipeline
            .void(command_id, reason.as_str())
            .instrument(span)
            .await?;
        Ok(Response::new(pb::VoidCommandResponse { voided }))
    }

    async fn authorize_payment(
        &self,
        r: Request<pb::AuthorizePaymentRequest>,
    ) -> Result<Response<pb::AuthorizePaymentResponse>, Status> {
        self.run(r, "AuthorizePayment", edge::authorize_payment, |o| {
            let (outcome, decline_reason) = o.payment();
            pb::AuthorizePaymentResponse {
                result: Some(o.write_result(0)),
                outcome: outcome.into(),
                decline_reason,
            }
        })
        .await
    }

    async fn refund_payment(
        &self,
        r: Request<pb::RefundPaymentRequest>,
    ) -> Result<Response<pb::RefundPaymentResponse>, Status> {
        self.run(r, "RefundPayment", edge::refund_payment, |o| {
            pb::RefundPaymentResponse {
                result: Some(o.write_result(0)),
            }
        })
        .await
    }
}
