//! An order saga across three services — order, stock, payment — recorded with the SDK.
//!
//! ```text
//! # No broker: the trackers are disabled and the saga logic runs as usual.
//! cargo run -p saga-tracker-sdk --example order_saga
//! # With a broker:
//! SAGA_TRACKER_BROKERS=localhost:9092 cargo run -p saga-tracker-sdk --example order_saga
//! ```
//!
//! What it shows:
//! - step names as a typed enum owned by the application (not by the SDK), one per saga type;
//! - the saga context travelling order → stock over HTTP headers and order → payment over
//!   Kafka headers, so all three services record into the same saga;
//! - a failure with an error code, then compensation;
//! - `Async` delivery and a shutdown that drains the buffer.

use std::time::Duration;

use http::HeaderMap;
use rdkafka::message::OwnedHeaders;
use saga_tracker_sdk::{DeliveryMode, Error, SagaContext, SagaTracker, TrackerConfig};

/// The saga type: `[A-Z0-9_.-]{1,64}`, one per kind of business process.
const ORDER_CREATION: &str = "ORDER_CREATION";

/// The steps of `ORDER_CREATION`, named for the business fact each establishes. Keeping
/// them in one enum means a typo is a compile error and dashboards see stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderStep {
    OrderPlaced,
    StockReserved,
    PaymentCaptured,
    OrderConfirmed,
}

impl OrderStep {
    const fn as_str(self) -> &'static str {
        match self {
            Self::OrderPlaced => "ORDER_PLACED",
            Self::StockReserved => "STOCK_RESERVED",
            Self::PaymentCaptured => "PAYMENT_CAPTURED",
            Self::OrderConfirmed => "ORDER_CONFIRMED",
        }
    }
}

impl AsRef<str> for OrderStep {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// One tracker per service. A real service builds its one tracker with
/// `SagaTracker::from_env()`; this example runs three services in one process, so it names
/// each and reads only the brokers from the environment.
fn tracker_for(service: &str) -> Result<SagaTracker, Error> {
    let config = match std::env::var("SAGA_TRACKER_BROKERS") {
        Ok(brokers) => TrackerConfig::new(brokers, service).with_delivery(DeliveryMode::Async),
        Err(_) => TrackerConfig::disabled(),
    };
    SagaTracker::new(config)
}

/// The payment provider's answer, as a service would model it.
#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined by issuer")
    }
}

struct Services {
    order: SagaTracker,
    stock: SagaTracker,
    payment: SagaTracker,
}

impl Services {
    /// The stock service's HTTP handler: the saga context arrives in the request headers.
    async fn reserve_stock(&self, request: &HeaderMap) -> Result<(), Error> {
        let Some(ctx) = SagaContext::from_http_headers(request)? else {
            return Ok(()); // not part of a saga: nothing to record
        };
        let saga = self.stock.saga(&ctx);
        saga.step_started(OrderStep::StockReserved).await?;
        // … reserve the items …
        saga.step_succeeded(OrderStep::StockReserved)
            .meta("warehouse", "eu-west-1")
            .await?;
        Ok(())
    }

    /// The stock service undoing its reservation.
    async fn release_stock(&self, request: &HeaderMap) -> Result<(), Error> {
        let Some(ctx) = SagaContext::from_http_headers(request)? else {
            return Ok(());
        };
        let saga = self.stock.saga(&ctx);
        saga.saga_compensating(OrderStep::StockReserved).await?;
        // … release the items …
        saga.saga_compensated(OrderStep::StockReserved).await?;
        Ok(())
    }

    /// The payment service's Kafka consumer: the context arrives in the message headers.
    async fn capture_payment(&self, headers: &OwnedHeaders, amount: f64) -> Result<bool, Error> {
        let Some(ctx) = SagaContext::from_kafka_headers(headers)? else {
            return Ok(false);
        };
        let saga = self.payment.saga(&ctx);
        saga.step_started(OrderStep::PaymentCaptured)
            .meta("amount", amount)
            .await?;
        if amount > 100.0 {
            // The payment service knows the saga cannot complete: it says so.
            saga.saga_failed(OrderStep::PaymentCaptured, "CARD_DECLINED", Declined)
                .await?;
            return Ok(false);
        }
        saga.step_succeeded(OrderStep::PaymentCaptured).await?;
        Ok(true)
    }

    /// The order service runs the saga.
    async fn place_order(&self, order: &str, amount: f64) -> Result<(), Error> {
        let ctx =
            SagaContext::new(format!("order-{order}"), ORDER_CREATION).with_business_key(order);
        let saga = self.order.saga(&ctx);
        saga.saga_started(OrderStep::OrderPlaced).await?;
        saga.step_succeeded(OrderStep::OrderPlaced)
            .meta("channel", "web")
            .await?;

        let mut request = HeaderMap::new();
        ctx.inject_http(&mut request)?;
        self.reserve_stock(&request).await?;

        let command = ctx.inject_kafka(OwnedHeaders::new())?;
        if self.capture_payment(&command, amount).await? {
            saga.saga_completed(OrderStep::OrderConfirmed).await?;
            println!("order {order}: completed");
        } else {
            self.release_stock(&request).await?;
            println!("order {order}: payment failed, stock released");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let services = Services {
        order: tracker_for("order-service")?,
        stock: tracker_for("stock-service")?,
        payment: tracker_for("payment-service")?,
    };
    if !services.order.is_enabled() {
        println!("SAGA_TRACKER_BROKERS is not set: recording is disabled, nothing is sent");
    }

    services.place_order("8812", 42.0).await?;
    services.place_order("8813", 129.9).await?;

    for (name, tracker) in [
        ("order", &services.order),
        ("stock", &services.stock),
        ("payment", &services.payment),
    ] {
        tracker.shutdown(Duration::from_secs(10)).await?;
        println!("{name}-service: {:?}", tracker.stats());
    }
    Ok(())
}
