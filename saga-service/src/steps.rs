//! Sending a saga step (or the void of one) to command-service over gRPC, and sorting the
//! answer into succeeded, refused or transient.

use std::time::Duration;

use contracts::orders::v1::{self as pb, command_service_client::CommandServiceClient};
use tonic::{Code, transport::Channel};

use crate::saga::{Saga, Step, StepResult, VoidResult};

/// command-service's client, presenting saga-service's token.
pub type CommandClient = CommandServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, service_runtime::auth::BearerToken>,
>;

/// Sends `step` of `saga`, with the step's idempotency key and the saga's order id as the
/// correlation id.
pub async fn send(
    client: &mut CommandClient,
    saga: &Saga,
    step: Step,
    timeout: Duration,
) -> StepResult {
    let command_id = step.command_id(saga.order_id).to_string();
    let order_id = saga.order_id.to_string();
    let reason = saga
        .reason
        .clone()
        .unwrap_or_else(|| "saga compensation".into());
    let result = match step {
        Step::ReserveStock => client
            .reserve_stock(request(
                saga,
                timeout,
                pb::ReserveStockRequest {
                    command_id,
                    order_id,
                    items: saga
                        .lines
                        .iter()
                        .map(|l| pb::StockItem {
                            sku: l.sku.clone(),
                            quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                        })
                        .collect(),
                },
            ))
            .await
            .map(|_| StepResult::Succeeded),
        Step::AuthorizePayment => client
            .authorize_payment(request(
                saga,
                timeout,
                pb::AuthorizePaymentRequest {
                    command_id,
                    order_id,
                    customer_id: saga.customer_id.to_string(),
                    amount: Some(pb::Money {
                        amount_minor: saga.total_minor,
                        currency: saga.currency.clone(),
                    }),
                    payment_method: saga.payment_method.clone(),
                },
            ))
            .await
            .map(|r| {
                let r = r.into_inner();
                match r.outcome() {
                    pb::PaymentOutcome::Authorized => StepResult::Succeeded,
                    _ => StepResult::Declined(format!("payment declined: {}", r.decline_reason)),
                }
            }),
        Step::ConfirmOrder => client
            .confirm_order(request(
                saga,
                timeout,
                pb::ConfirmOrderRequest {
                    command_id,
                    order_id,
                },
            ))
            .await
            .map(|_| StepResult::Succeeded),
        Step::RefundPayment => client
            .refund_payment(request(
                saga,
                timeout,
                pb::RefundPaymentRequest {
                    command_id,
                    order_id,
                    reason,
                },
            ))
            .await
            .map(|_| StepResult::Succeeded),
        Step::ReleaseStock => client
            .release_stock(request(
                saga,
                timeout,
                pb::ReleaseStockRequest {
                    command_id,
                    order_id,
                    skus: saga.lines.iter().map(|l| l.sku.clone()).collect(),
                },
            ))
            .await
            .map(|_| StepResult::Succeeded),
        Step::CancelOrder => client
            .cancel_order(request(
                saga,
                timeout,
                pb::CancelOrderRequest {
                    command_id,
                    order_id,
                    reason,
                },
            ))
            .await
            .map(|_| StepResult::Succeeded),
    };
    result.unwrap_or_else(|status| classify(step, status))
}

/// Voids the command id of `step`, so that an attempt still on its way cannot run later.
pub async fn void(
    client: &mut CommandClient,
    saga: &Saga,
    step: Step,
    timeout: Duration,
) -> VoidResult {
    let reason = saga
        .reason
        .clone()
        .unwrap_or_else(|| format!("the saga settled step {}", step.as_str()));
    let answer = client
        .void_command(request(
            saga,
            timeout,
            pb::VoidCommandRequest {
                command_id: step.command_id(saga.order_id).to_string(),
                reason,
            },
        ))
        .await;
    match answer {
        Ok(r) if r.get_ref().voided => VoidResult::Voided,
        Ok(_) => VoidResult::AlreadyRan,
        Err(status) => VoidResult::Transient(describe(&status)),
    }
}

/// A request with the attempt's timeout and the saga's order id as correlation id.
fn request<T>(saga: &Saga, timeout: Duration, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    // The step's span (a child of the trace that placed the order) goes with the call.
    service_runtime::telemetry::inject(request.metadata_mut());
    if let Ok(value) = saga.order_id.to_string().parse() {
        request.metadata_mut().insert("x-correlation-id", value);
    }
    request
}

fn describe(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// Business refusals are refusals; everything else may pass and is retried.
///
/// ALREADY_EXISTS answers a step's fixed key sent with different words: a compensation
/// redone after a lost save, with another reason than the first time. The key's command
/// ran then, so the compensation is done.
fn classify(step: Step, status: tonic::Status) -> StepResult {
    match status.code() {
        Code::AlreadyExists if !step.is_forward() => StepResult::Succeeded,
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument | Code::AlreadyExists => {
            StepResult::Refused(status.message().to_owned())
        }
        _ => StepResult::Transient(describe(&status)),
    }
}
