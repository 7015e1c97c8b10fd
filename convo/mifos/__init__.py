"""Mifos X / Apache Fineract: the REST client (``client``) and a simulator (``sim``)."""
from convo.mifos.client import (
    Account,
    ClientRef,
    Currency,
    LoanDue,
    MifosClient,
    MifosError,
    MifosNotFound,
    MifosRejected,
    MifosUnavailable,
    SavingsBalance,
    Transaction,
)

__all__ = [
    "Account",
    "ClientRef",
    "Currency",
    "LoanDue",
    "MifosClient",
    "MifosError",
    "MifosNotFound",
    "MifosRejected",
    "MifosUnavailable",
    "SavingsBalance",
    "Transaction",
]
