"""Mifos X / Apache Fineract: the REST client (``client``), its cache and keys, the reads beyond it
(``notify_reads``); the simulator is in :mod:`convo.devkit`."""
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
