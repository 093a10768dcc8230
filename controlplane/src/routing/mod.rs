//! Number normalization, routing by prefix, class of service and admission.
