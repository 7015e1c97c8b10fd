"""The simulator's data set: 41 clients in Kenya, Tanzania, Senegal and Côte d'Ivoire.

:func:`build` returns plain dicts already in Fineract's GET shapes (Python
``date`` and ``Decimal`` values; the simulator writes dates as ``[y, m, d]``
arrays). Everything is computed from the business date ``today``, so due
dates are always sensible: Grace's loan 29 is always five days in arrears,
Peter's next installment is always due in three days, and so on.

Amounts follow Fineract: stored values carry 6 decimals (``7480.000000``),
values computed as Money (the schedule-level totals) carry 2. Schedules are
built by applying repayments to a flat-interest schedule in Fineract's
"penalties, fees, interest, principal" order, so periods add up to the
summary; savings running balances add up to ``accountBalance``.

Groups and centers (``data["groups"]``, ``data["centers"]``) carry collection
meeting calendars in Fineract's ``CalendarData`` shape (weekly, fortnightly,
monthly on a day, monthly on the first Thursday); see :data:`GROUPS`.

Currencies: KES 2 decimals; TZS 0 decimals in multiples of 50 and XOF 0
decimals in multiples of 5 (how East/West African MFIs configure their
products; Fineract takes decimals and multiples from the product).
"""
from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, NotRequired, TypedDict
from zoneinfo import ZoneInfo

Z6 = Decimal("0.000000")

#: A Fineract GET body (or part of one) as the simulator keeps it: JSON-shaped, with Python ``date``
#: and ``Decimal`` values; keys starting with ``_`` are the simulator's own and never sent.
Body = dict[str, Any]
#: The data set :func:`build` returns: ``clients``, ``savings``, ``loans``, ``groups``, ``centers``
#: (each id → :data:`Body`), ``offices`` (id → name) and ``today``; the simulator adds its own keys.
DataSet = dict[str, Any]
#: Fineract's enum shape in reference tables: (id, code, value)
EnumRow = tuple[int, str, str]


class CurrencyData(TypedDict):
    """Fineract's ``CurrencyData``; ``inMultiplesOf`` only where the product rounds to it."""

    code: str
    name: str
    decimalPlaces: int
    inMultiplesOf: NotRequired[int]
    displaySymbol: str
    nameCode: str
    displayLabel: str


# ------------------------------------------------------------------ reference data

CURRENCIES: dict[str, CurrencyData] = {
    "KES": {"code": "KES", "name": "Kenyan Shilling", "decimalPlaces": 2, "displaySymbol": "KSh",
            "nameCode": "currency.KES", "displayLabel": "Kenyan Shilling (KSh)"},
    "TZS": {"code": "TZS", "name": "Tanzanian Shilling", "decimalPlaces": 0, "inMultiplesOf": 50,
            "displaySymbol": "TSh", "nameCode": "currency.TZS", "displayLabel": "Tanzanian Shilling (TSh)"},
    "XOF": {"code": "XOF", "name": "CFA Franc BCEAO", "decimalPlaces": 0, "inMultiplesOf": 5,
            "displaySymbol": "CFA", "nameCode": "currency.XOF", "displayLabel": "CFA Franc BCEAO (CFA)"},
}

OFFICES: dict[int, str] = {
    1: "Head Office", 2: "Nairobi Eastlands", 3: "Kisumu", 4: "Arusha", 5: "Dar es Salaam",
    6: "Dakar Plateau", 7: "Abidjan Yopougon", 8: "Dakar Médina",
}
#: office id → parent office id (Fineract ``m_office.parent_id``). Dakar Médina (8) is a branch of
#: Dakar Plateau (6) that flows/notify.yaml does not list: its clients' numbers are read as Senegalese
#: because its parent's are.
OFFICE_PARENTS: dict[int, int | None] = {1: None, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 6}

#: (id, name, short name) per product
SAVINGS_PRODUCTS: dict[str, tuple[int, str]] = {
    "VS": (1, "Voluntary Savings"), "JS": (2, "Junior Savers"), "CH": (4, "Chama Group Savings"),
    "AK": (6, "Akiba Bora"), "EP": (7, "Épargne Libre"), "TO": (8, "Tontine Plus"),
}
LOAN_PRODUCTS: dict[str, tuple[int, str]] = {
    "BF6": (3, "Biashara Flat 6M"), "SFL": (5, "School Fees Loan"), "KIL": (9, "Kilimo Loan"),
    "EMG": (10, "Emergency Loan"), "CRD": (11, "Crédit Commerce"),
}

PAYMENT_TYPES: dict[str, tuple[int, str]] = {"KES": (4, "M-Pesa"), "TZS": (5, "M-Pesa TZ"), "XOF": (6, "Orange Money")}
CASH: tuple[int, str] = (1, "Cash")

_AUDIT: dict[str, str] = {"ByUsername": "mifos", "ByFirstname": "App", "ByLastname": "Administrator"}

SAVINGS_STATUS: dict[str, EnumRow] = {
    "pending": (100, "savingsAccountStatusType.submitted.and.pending.approval", "Submitted and pending approval"),
    "approved": (200, "savingsAccountStatusType.approved", "Approved"),
    "active": (300, "savingsAccountStatusType.active", "Active"),
    "withdrawn": (400, "savingsAccountStatusType.withdrawn.by.applicant", "Withdrawn by applicant"),
    "rejected": (500, "savingsAccountStatusType.rejected", "Rejected"),
    "closed": (600, "savingsAccountStatusType.closed", "Closed"),
}
_SAVINGS_FLAGS: dict[str, str | None] = {
    "submittedAndPendingApproval": "pending", "approved": "approved", "rejected": "rejected",
    "withdrawnByApplicant": "withdrawn", "active": "active", "closed": "closed",
    "prematureClosed": None, "transferInProgress": None, "transferOnHold": None, "matured": None,
}
LOAN_STATUS: dict[str, EnumRow] = {
    "pending": (100, "loanStatusType.submitted.and.pending.approval", "Submitted and pending approval"),
    "approved": (200, "loanStatusType.approved", "Approved"),
    "active": (300, "loanStatusType.active", "Active"),
    "withdrawn": (400, "loanStatusType.withdrawn.by.client", "Withdrawn by applicant"),
    "rejected": (500, "loanStatusType.rejected", "Rejected"),
    "closed": (600, "loanStatusType.closed.obligations.met", "Closed (obligations met)"),
}
CLIENT_STATUS: dict[str, EnumRow] = {
    "pending": (100, "clientStatusType.pending", "Pending"),
    "active": (300, "clientStatusType.active", "Active"),
    "closed": (600, "clientStatusType.closed", "Closed"),
    "rejected": (700, "clientStatusType.rejected", "Rejected"),
    "withdraw": (800, "clientStatusType.withdraw", "Withdrawn"),
}

#: kind → (id, code, value, flag set in ``transactionType``, entry type)
_SAVINGS_TX_TYPES: dict[str, tuple[int, str, str, str, str]] = {
    "deposit": (1, "savingsAccountTransactionType.deposit", "Deposit", "deposit", "CREDIT"),
    "withdrawal": (2, "savingsAccountTransactionType.withdrawal", "Withdrawal", "withdrawal", "DEBIT"),
    "interest": (3, "savingsAccountTransactionType.interestPosting", "Interest Posting", "interestPosting", "CREDIT"),
    "charge": (7, "savingsAccountTransactionType.payCharge", "Pay Charge", "feeDeduction", "DEBIT"),
}
_SAVINGS_TX_FLAGS = ["deposit", "dividendPayout", "withdrawal", "interestPosting", "feeDeduction",
                     "initiateTransfer", "approveTransfer", "withdrawTransfer", "rejectTransfer",
                     "overdraftInterest", "writtenoff", "overdraftFee", "withholdTax", "escheat",
                     "amountHold", "amountRelease", "accrual"]
#: kind → (id, code, value, flag set in ``type``)
_LOAN_TX_TYPES: dict[str, tuple[int, str, str, str]] = {
    "disbursement": (1, "loanTransactionType.disbursement", "Disbursement", "disbursement"),
    "repayment": (2, "loanTransactionType.repayment", "Repayment", "repayment"),
    "accrual": (10, "loanTransactionType.accrual", "Accrual", "accrual"),
}
_LOAN_TX_FLAGS = ["disbursement", "repaymentAtDisbursement", "repayment", "merchantIssuedRefund",
                  "payoutRefund", "goodwillCredit", "interestPaymentWaiver", "chargeRefund", "contra",
                  "waiveInterest", "waiveCharges", "accrual", "writeOff", "recoveryRepayment",
                  "initiateTransfer", "approveTransfer", "withdrawTransfer", "rejectTransfer",
                  "chargePayment", "refund", "refundForActiveLoans", "creditBalanceRefund",
                  "chargeAdjustment", "chargeback", "chargeoff", "downPayment", "reAge", "reAmortize",
                  "accrualActivity", "interestRefund"]

# ------------------------------------------------------------------ who is who
# (id, first, middle, last, office, stored mobile, client status, accounts)
# accounts: ("sav", product, currency, balance, status) or
#           ("loan", product, currency, principal, months, situation, status)
# loan situations: "ontime" (next installment due in 3 days), "arrears" (installment
# 5 days late, partly paid), "deep" (3 installments missed), "today" (due today),
# "fresh" (disbursed 10 days ago), "paid" (closed).

SavingsSpec = tuple[Literal["sav"], str, str, str, str]
LoanSpec = tuple[Literal["loan"], str, str, str, int, str, str]
ClientSpec = tuple[int, str, str, str, int, str, str, list[SavingsSpec | LoanSpec]]

_CLIENTS: list[ClientSpec] = [
    (2, "Peter", "Otieno", "Ouma", 2, "+254700000102", "active",
     [("sav", "VS", "KES", "5200", "active"), ("loan", "BF6", "KES", "30000", 6, "ontime", "active")]),
    (3, "Mary", "Akinyi", "Odhiambo", 3, "0700000103", "active", [("sav", "VS", "KES", "1250.50", "active")]),
    (4, "John", "Kipchoge", "Mutai", 3, "254 700 000 104", "active",
     [("sav", "VS", "KES", "14300", "active"), ("sav", "CH", "KES", "62000", "active"),
      ("sav", "JS", "KES", "3100", "active")]),
    (5, "Faith", "Njeri", "Mwangi", 2, "+254700000105", "active",
     [("loan", "BF6", "KES", "18000", 6, "ontime", "active"), ("loan", "SFL", "KES", "24000", 12, "arrears", "active"),
      ("sav", "VS", "KES", "800", "active")]),
    (6, "Samuel", "Kiprono", "Chebet", 3, "0700000106", "active", [("sav", "VS", "KES", "0", "active")]),
    (7, "Esther", "Wambui", "Karanja", 1, "254700000107", "active", []),
    (8, "Joseph", "Mwangi", "Kariuki", 1, "+254700000108", "closed",
     [("sav", "VS", "KES", "0", "closed"), ("loan", "EMG", "KES", "5000", 3, "paid", "closed")]),
    (9, "Lucy", "Atieno", "Onyango", 3, "0700000109", "active",
     [("sav", "VS", "KES", "0", "closed"), ("loan", "SFL", "KES", "15000", 6, "fresh", "withdrawn"),
      ("loan", "BF6", "KES", "20000", 6, "fresh", "approved"), ("sav", "AK", "KES", "0", "rejected")]),
    (10, "David", "Kamau", "Njoroge", 2, "254700000110", "active",
     [("sav", "AK", "KES", "9870.25", "active"), ("loan", "EMG", "KES", "6000", 3, "today", "active")]),
    (11, "Agnes", "Chepkoech", "Kirui", 3, "0700000111", "active", [("sav", "VS", "KES", "22450", "active")]),
    (12, "Daniel", "Omondi", "Ochieng", 3, "+254700000112", "active",
     [("loan", "KIL", "KES", "40000", 12, "deep", "active")]),
    (13, "Ruth", "Nyambura", "Gitau", 2, "254700000113", "pending", []),
    (14, "Wanjiku", "Muthoni", "Ndungu", 2, "0700000114", "active",
     [("sav", "CH", "KES", "18500", "active"), ("loan", "KIL", "KES", "50000", 12, "fresh", "active")]),
    (15, "Kevin", "Mutua", "Musyoka", 1, "+254700000115", "active",
     [("sav", "VS", "KES", "430", "active"), ("loan", "BF6", "KES", "9000", 6, "paid", "closed"),
      ("loan", "BF6", "KES", "12000", 6, "ontime", "active")]),
    (16, "Hellen", "Jerop", "Kosgei", 3, "254700000116", "active", [("sav", "JS", "KES", "75", "pending")]),
    (17, "Neema", "Joseph", "Mushi", 4, "+255710000117", "active", [("sav", "AK", "TZS", "185000", "active")]),
    (18, "Baraka", "Elia", "Massawe", 4, "255750000118", "active",
     [("sav", "AK", "TZS", "42000", "active"), ("loan", "KIL", "TZS", "600000", 6, "ontime", "active")]),
    (19, "Rehema", "Saidi", "Mwakyusa", 5, "0710000119", "active",
     [("loan", "BF6", "TZS", "450000", 6, "arrears", "active")]),
    (20, "Juma", "Hamisi", "Kombo", 5, "+255750000120", "active",
     [("loan", "EMG", "TZS", "150000", 3, "deep", "active"), ("sav", "AK", "TZS", "0", "active")]),
    (21, "Zawadi", "Mrisho", "Kimaro", 5, "255710000121", "active",
     [("sav", "AK", "TZS", "96000", "active"), ("sav", "CH", "TZS", "310000", "active")]),
    (22, "Halima", "Abdallah", "Mbwana", 5, "0750000122", "active", [("sav", "AK", "TZS", "0", "active")]),
    (23, "Emmanuel", "Lukumay", "Mollel", 4, "+255710000123", "active",
     [("sav", "AK", "TZS", "27500", "active"), ("loan", "KIL", "TZS", "800000", 12, "today", "active")]),
    (24, "Upendo", "Daudi", "Shirima", 4, "255750000124", "withdraw", []),
    (25, "Awa", "", "Diop", 6, "+221771000125", "active", [("sav", "EP", "XOF", "125000", "active")]),
    (26, "Mamadou", "Lamine", "Ndiaye", 6, "221771000126", "active",
     [("sav", "EP", "XOF", "15000", "active"), ("loan", "CRD", "XOF", "300000", 6, "ontime", "active")]),
    (27, "Fatou", "Bintou", "Sow", 6, "771000127", "active",
     [("sav", "TO", "XOF", "48500", "active"), ("loan", "CRD", "XOF", "200000", 6, "arrears", "active")]),
    (28, "Ibrahima", "", "Fall", 6, "+221771000128", "active",
     [("sav", "EP", "XOF", "7500", "active"), ("sav", "TO", "XOF", "91000", "active"),
      ("sav", "EP", "XOF", "0", "closed")]),
    (29, "Aminata", "", "Traoré", 7, "+2250701000129", "active", [("sav", "EP", "XOF", "64000", "active")]),
    (30, "Kouassi", "Yao", "Konan", 7, "2250701000130", "active",
     [("loan", "CRD", "XOF", "500000", 12, "fresh", "active"), ("sav", "EP", "XOF", "20000", "active")]),
    (31, "Adjoua", "Marie", "Kouamé", 7, "0701000131", "active",
     [("sav", "TO", "XOF", "12500", "active"), ("loan", "CRD", "XOF", "150000", 6, "deep", "active")]),
    (32, "Aïssatou", "", "Ba", 6, "+221771000132", "rejected", []),
    (33, "Cheikh", "Tidiane", "Sarr", 6, "221771000133", "active",
     [("loan", "CRD", "XOF", "250000", 6, "paid", "closed"), ("sav", "EP", "XOF", "33000", "active")]),
    (34, "Seydou", "", "Coulibaly", 7, "+2250701000134", "active",
     [("sav", "EP", "XOF", "0", "active"), ("loan", "CRD", "XOF", "100000", 6, "today", "active")]),
    (35, "Mariam", "", "Konaté", 7, "2250701000135", "active", [("sav", "TO", "XOF", "5000", "pending")]),
    (36, "Grace", "Achieng", "Owino", 2, "+254700000136", "active",
     [("sav", "VS", "KES", "2800", "active"), ("loan", "EMG", "KES", "4000", 3, "arrears", "active")]),
    # One family phone, +254700000150. Fineract keeps m_client.mobile_no UNIQUE, so staff typed it in
    # two spellings; Fineract's search answers the newest client first. The caller chooses who they are.
    (37, "Achieng", "Akinyi", "Otieno", 2, "+254700000150", "active",
     [("sav", "VS", "KES", "3400", "active"), ("loan", "EMG", "KES", "5000", 3, "ontime", "active")]),
    (38, "Baraka", "Ouma", "Otieno", 2, "0700000150", "active",
     [("sav", "AK", "KES", "12750", "active"), ("loan", "BF6", "KES", "20000", 6, "arrears", "active")]),
    (39, "Otieno", "", "Were", 2, "254700000150", "closed", []),      # left the MFI: never offered
    # A Kenyan whose national digits are those of Fatou Bintou Sow (Dakar, stored "771000127")
    (40, "Wairimu", "Njeri", "Kamau", 3, "0771000127", "active", [("sav", "VS", "KES", "640", "active")]),
    # A client of an office notify.yaml does not list (8, under Dakar Plateau), stored without country code
    (41, "Ndeye", "", "Faye", 8, "771000141", "active", [("sav", "EP", "XOF", "22500", "active")]),
]

#: ids the tests and the demo rely on
ARREARS_LOAN_ID = 29
ON_TIME_LOAN_ID = 200  # Peter Otieno Ouma's Biashara loan
NO_ACCOUNTS_CLIENT_ID = 7
CLOSED_CLIENT_PHONE = "+254700000108"
#: John Kipchoge Mutai (3 savings) was typed in as "254 700 000 104": Fineract's
#: exact search compares the stored text, so no spelling of his number finds him
#: (a data-quality case the MFI must fix in Mifos X; the caller is "unknown").
SPACED_PHONE = "+254700000104"
#: Achieng (37) and Baraka (38) Otieno share one phone; closed client 39 had it too
SHARED_PHONE = "+254700000150"
SHARED_PHONE_CLIENTS = (37, 38)
#: stored without a country code in another country's office: Fatou (27, Dakar, "771000127") and
#: Rehema (19, Dar es Salaam, "0710000119"); the Kenyan numbers with the same digits are not theirs
#: (+254771000127 is Wairimu's, client 40; +254710000119 is nobody's)
FOREIGN_DIGITS: dict[str, int | None] = {"+254771000127": 40, "+254710000119": None, "+254771000141": None}

DEMO_PHONES: list[tuple[str, str]] = [
    ("+254700000101", "Grace Wanjiru Kamau (KES): savings 8,637.50 (7,637.50 available), loan 29 five days in arrears"),
    ("+254700000102", "Peter Otieno Ouma (KES): 1 savings, 1 loan due in 3 days"),
    ("+254700000103", "Mary Akinyi Odhiambo (KES): 1 savings, stored as 07…"),
    ("+254700000111", "Agnes Chepkoech Kirui (KES): 1 savings, stored as 07…"),
    ("+254700000105", "Faith Njeri Mwangi (KES): 2 loans (one on time, one in arrears), 1 savings"),
    ("+254700000106", "Samuel Kiprono Chebet (KES): zero-balance savings"),
    ("+254700000107", "Esther Wambui Karanja: client with no accounts"),
    ("+254700000109", "Lucy Atieno Onyango: only closed, withdrawn, approved and rejected accounts"),
    ("+254700000110", "David Kamau Njoroge (KES): savings, loan installment due today"),
    ("+254700000112", "Daniel Omondi Ochieng (KES): loan three installments behind"),
    ("+255750000118", "Baraka Elia Massawe (TZS): savings, loan due in 3 days"),
    ("+255710000119", "Rehema Saidi Mwakyusa (TZS): loan in arrears, stored as 07…"),
    ("+221771000126", "Mamadou Lamine Ndiaye (XOF): savings, loan due in 3 days"),
    ("+221771000127", "Fatou Bintou Sow (XOF): tontine savings, loan in arrears, stored without country code"),
    ("+2250701000130", "Kouassi Yao Konan (XOF): new loan, savings"),
    ("+254700000150", "Achieng and Baraka Otieno (KES) share this phone: the caller chooses who they are"),
    ("+254771000127", "Wairimu Njeri Kamau (KES): savings; her national digits are a Dakar client's"),
]


# ------------------------------------------------------------------ groups, centers, meetings
# Fineract: clients belong to groups; a group either stands alone (its own
# collection meeting calendar) or sits in a center (it meets on the center's
# calendar). Calendars start about a year before the business date, on the
# right weekday, so each scenario holds at any date.

#: center id → (name, office, recurrence, location)
CENTERS: dict[int, tuple[str, int, str, str]] = {
    1: ("Umoja Center", 1, "FREQ=WEEKLY;BYDAY=TU", "Kariobangi Social Hall"),
    2: ("Kilimo Center", 3, "FREQ=MONTHLY;BYSETPOS=1;BYDAY=TH", "Kondele Chief's Camp"),
}
#: group id → (name, office, center id or None, recurrence (own calendar) or None, location, member client ids, status)
GROUPS: dict[int, tuple[str, int, int | None, str | None, str | None, list[int], str]] = {
    10: ("Umoja Women Group", 1, 1, None, None, [1, 5, 36], "active"),
    11: ("Tumaini Self-Help Group", 2, None, "FREQ=WEEKLY;INTERVAL=2;BYDAY=WE", "Eastlands Market Shed", [2, 10, 14],
         "active"),
    12: ("Jamii Traders", 3, 2, None, None, [3, 11, 12], "active"),
    13: ("Neema Group", 4, None, "FREQ=MONTHLY;BYMONTHDAY=28", None, [17, 18], "active"),
    14: ("GIE Jappoo", 6, None, None, None, [27], "active"),           # a group without a meeting calendar
    15: ("Wazee Savers (closed)", 2, None, "FREQ=WEEKLY;BYDAY=FR", "Mathare", [15], "closed"),
}
#: demo phones of clients who have a next meeting (group or center) and of some who have none
MEETING_PHONES: dict[str, str] = {
    "+254700000101": "Grace Wanjiru Kamau: Umoja Women Group in Umoja Center, weekly on Tuesday",
    "+254700000105": "Faith Njeri Mwangi: Umoja Women Group in Umoja Center, weekly on Tuesday",
    "+254700000102": "Peter Otieno Ouma: Tumaini Self-Help Group, every other Wednesday",
    "+254700000110": "David Kamau Njoroge: Tumaini Self-Help Group, every other Wednesday",
    "+254700000103": "Mary Akinyi Odhiambo: Jamii Traders in Kilimo Center, first Thursday of the month",
    "+254700000111": "Agnes Chepkoech Kirui: Jamii Traders in Kilimo Center, first Thursday of the month",
    "+255750000118": "Baraka Elia Massawe: Neema Group, monthly on the 28th",
}
NO_MEETING_PHONES = ("+254700000106", "+221771000126", "+221771000127", "+254700000115")

_WEEKDAYS: dict[str, int] = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_WEEKDAY_TYPES: dict[str, tuple[int, str]] = {
    "MO": (1, "monday"), "TU": (2, "tuesday"), "WE": (3, "wednesday"), "TH": (4, "thursday"),
    "FR": (5, "friday"), "SA": (6, "saturday"), "SU": (7, "sunday")}
_DAY_NAMES: dict[str, str] = {"MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday",
              "SA": "Saturday", "SU": "Sunday"}
_GROUP_STATUS: dict[str, EnumRow] = {"active": (300, "groupingStatusType.active", "Active"),
                 "closed": (600, "groupingStatusType.closed", "Closed")}


def _rule_parts(recurrence: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in recurrence.split(";"))


def _calendar_start(recurrence: str, today: date) -> date:
    """About a year back, on a day the rule meets (52 weeks keeps the fortnight's phase)."""
    rule = _rule_parts(recurrence)
    if rule["FREQ"] == "WEEKLY":
        back = today - timedelta(days=364)
        return back - timedelta(days=(back.weekday() - _WEEKDAYS[rule["BYDAY"]]) % 7)
    return date(today.year - 1, today.month, 1)


def _human(recurrence: str) -> str:
    """CalendarUtils.getRRuleReadable's wording, for the rules used here."""
    rule = _rule_parts(recurrence)
    every = int(rule.get("INTERVAL", 1))
    if rule["FREQ"] == "WEEKLY":
        head = "Weekly" if every == 1 else f"Every {every} weeks"
        return f"{head} on {_DAY_NAMES[rule['BYDAY']]}"
    head = "Monthly" if every == 1 else f"Every {every} months"
    if "BYMONTHDAY" in rule:
        return f"{head} on day {rule['BYMONTHDAY']}"
    nth = {"1": "first", "2": "second", "3": "third", "4": "fourth", "-1": "last"}[rule["BYSETPOS"]]
    return f"{head} on {nth} {_DAY_NAMES[rule['BYDAY']]}"


def calendar_record(*, id: int, entity_id: int, entity: str, recurrence: str, location: str | None,
                    today: date) -> Body:
    """A ``CalendarData`` (collection meeting) without its generated dates (see :func:`calendar_dates`)."""
    rule = _rule_parts(recurrence)
    weekly = rule["FREQ"] == "WEEKLY"
    entity_type = {"groups": (2, "calendarEntityType.groups", "GROUPS"),
                   "centers": (4, "calendarEntityType.centers", "CENTERS")}[entity]
    body: Body = {
        "id": id, "calendarInstanceId": id, "entityId": entity_id,
        "entityType": dict(zip(("id", "code", "value"), entity_type)),
        "title": f"{entity}_{entity_id}_CollectionMeeting", "location": location,
        "startDate": _calendar_start(recurrence, today),
        "type": {"id": 1, "code": "calendarType.collection", "value": "COLLECTION"},
        "repeating": True, "recurrence": recurrence,
        "frequency": {"id": 2, "code": "calendarFrequencyType.weekly", "value": "WEEKLY"} if weekly
        else {"id": 3, "code": "calendarFrequencyType.monthly", "value": "MONTHLY"},
        "interval": int(rule.get("INTERVAL", 1)),
    }
    if "BYDAY" in rule:
        day_id, day_word = _WEEKDAY_TYPES[rule["BYDAY"]]
        body["repeatsOnDay"] = {"id": day_id, "code": f"calendarWeekDaysType.{day_word}", "value": rule["BYDAY"]}
    body.update({"firstReminder": 0, "secondReminder": 0, "humanReadable": _human(recurrence),
                 "createdByUserId": 1, "createdByUsername": "mifos", "lastUpdatedByUserId": 1,
                 "lastUpdatedByUsername": "mifos"})
    return body


def calendar_dates(calendar: Body, today: date) -> Body:
    """The calendar with what Fineract generates per request: ``recurringDates`` (start to
    a year ahead), ``nextTenRecurringDates`` (from the business date) and
    ``recentEligibleMeetingDate``."""
    from dateutil.rrule import rrulestr

    start = calendar["startDate"]
    rule = rrulestr(calendar["recurrence"], dtstart=datetime(start.year, start.month, start.day))
    until = datetime(today.year + 1, today.month, min(today.day, 28))
    every = [d.date() for d in rule.between(datetime(start.year, start.month, start.day), until, inc=True)]
    upcoming = [d for d in every if d >= today][:10]
    out = dict(calendar)
    out.update({"recurringDates": every, "nextTenRecurringDates": upcoming})
    if upcoming:
        out["recentEligibleMeetingDate"] = upcoming[0]
    return out


def _grouping(*, id: int, name: str, office: int, status: str, today: date, hierarchy: str,
              level: str | None = None, center: Body | None = None, staff: bool = True) -> Body:
    activated = today - timedelta(days=400 + id)
    body: Body = {"id": id, "accountNo": f"{id:09d}", "name": name,
            "status": dict(zip(("id", "code", "value"), _GROUP_STATUS[status])),
            "active": status == "active", "activationDate": activated,
            "officeId": office, "officeName": OFFICES[office]}
    if center:
        body.update({"centerId": center["id"], "centerName": center["name"]})
    if staff:
        body.update({"staffId": 2, "staffName": "Otieno, Peter"})
    body["hierarchy"] = hierarchy
    if level:
        body["groupLevel"] = level
    body["timeline"] = _timeline(submittedOn=activated - timedelta(days=3), activatedOn=activated)
    if status == "closed":
        body["timeline"]["closedOnDate"] = today - timedelta(days=60)
    return body


def member_record(client: Body) -> Body:
    """A client as listed in a group's ``clientMembers``."""
    keep = ("id", "accountNo", "externalId", "status", "active", "activationDate", "firstname", "middlename",
            "lastname", "displayName", "mobileNo", "officeId", "officeName", "staffId", "staffName")
    return {k: client[k] for k in keep if k in client}


def _groups_and_centers(today: date, data: DataSet) -> None:
    centers: dict[int, Body] = {}
    groups: dict[int, Body] = {}
    for cid, (name, office, rule, place) in CENTERS.items():
        centers[cid] = _grouping(id=cid, name=name, office=office, status="active", today=today,
                                 hierarchy=f".{cid}.")
        centers[cid]["_calendar"] = calendar_record(id=100 + cid, entity_id=cid, entity="centers",
                                                    recurrence=rule, location=place, today=today)
    for gid, (name, office, center_id, recurrence, location, members, status) in GROUPS.items():
        center = centers.get(center_id) if center_id is not None else None
        group = _grouping(id=gid, name=name, office=office, status=status, today=today, center=center,
                          hierarchy=f".{center_id}.{gid}." if center else f".{gid}.", level="2")
        if recurrence:
            group["_calendar"] = calendar_record(id=200 + gid, entity_id=gid, entity="groups",
                                                 recurrence=recurrence, location=location, today=today)
        group["_members"] = list(members)
        groups[gid] = group
        for client_id in members:
            data["clients"][client_id]["groups"].append({"id": gid, "accountNo": group["accountNo"], "name": name})
    data["centers"], data["groups"] = centers, groups


def group_body(data: DataSet, group_id: int, associations: set[str], today: date) -> Body | None:
    """``GET /groups/{id}`` with ``associations`` (clientMembers, activeClientMembers,
    collectionMeetingCalendar; ``all`` adds them all): a group in a center gets the center's calendar."""
    group = data["groups"].get(group_id)
    if group is None:
        return None
    body = dict(group)
    if "all" in associations:
        associations = associations | {"clientMembers", "activeClientMembers", "collectionMeetingCalendar"}
    members = [data["clients"][c] for c in group["_members"]]
    if "clientMembers" in associations and members:
        body["clientMembers"] = [member_record(c) for c in members]
    active = [c for c in members if c.get("active")]
    if "activeClientMembers" in associations and active:
        body["activeClientMembers"] = [member_record(c) for c in active]
    if "collectionMeetingCalendar" in associations:
        owner = data["centers"].get(group.get("centerId")) if group.get("centerId") else group
        calendar = (owner or {}).get("_calendar")
        if calendar:
            body["collectionMeetingCalendar"] = calendar_dates(calendar, today)
    return body


def center_body(data: DataSet, center_id: int, associations: set[str], today: date) -> Body | None:
    """``GET /centers/{id}`` with ``groupMembers`` and/or ``collectionMeetingCalendar``."""
    center = data["centers"].get(center_id)
    if center is None:
        return None
    body = dict(center)
    if "groupMembers" in associations:
        body["groupMembers"] = [{k: v for k, v in g.items() if not k.startswith("_")}
                                for g in data["groups"].values() if g.get("centerId") == center_id]
    if "collectionMeetingCalendar" in associations and center.get("_calendar"):
        body["collectionMeetingCalendar"] = calendar_dates(center["_calendar"], today)
    return body


# ------------------------------------------------------------------ writes (the simulator's transfers)


def with_savings_withdrawal(acc: Body, day: date, amount: Decimal, today: date) -> Body:
    """The savings account rebuilt with one more (transfer) withdrawal."""
    args = dict(acc["_args"])
    args["txs"] = list(args["txs"]) + [(day, "withdrawal", amount, False)]
    return savings_account(today=today, **args)


def with_loan_repayment(loan: Body, day: date, amount: Decimal, today: date) -> Body:
    """The loan rebuilt with one more repayment (installments paid oldest first,
    interest before principal); closed when nothing is left to pay."""
    args = dict(loan["_args"])
    args["payments"] = list(args["payments"]) + [(day, Decimal(amount))]
    rebuilt = loan_account(today=today, **args)
    if rebuilt["summary"]["totalOutstanding"] == 0 and args["status"] == "active":
        args.update(status="closed", closed_on=day)
        rebuilt = loan_account(today=today, **args)
    return rebuilt


# ------------------------------------------------------------------ helpers


def d6(value: Decimal | int | str) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.000001"))


def d2(value: Decimal | int | str) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def add_months(day: date, months: int) -> date:
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _round(amount: Decimal, currency: str) -> Decimal:
    places = CURRENCIES[currency]["decimalPlaces"]
    step = CURRENCIES[currency].get("inMultiplesOf") or 1
    q = (amount / step).quantize(Decimal(1) / (10 ** places), rounding=ROUND_HALF_UP) * step
    return q.quantize(Decimal(1) / (10 ** places)) if places else q.quantize(Decimal(1))


def _status(table: dict[str, EnumRow], key: str, flags: dict[str, bool] | None = None) -> Body:
    sid, code, value = table[key]
    out: Body = {"id": sid, "code": code, "value": value}
    if flags is not None:
        out.update(flags)
    return out


def _savings_status(key: str) -> Body:
    return _status(SAVINGS_STATUS, key, {f: (k == key) for f, k in _SAVINGS_FLAGS.items()})


def _loan_status(key: str) -> Body:
    return _status(LOAN_STATUS, key, {
        "pendingApproval": key == "pending", "waitingForDisbursal": key == "approved",
        "active": key == "active", "closedObligationsMet": key == "closed", "closedWrittenOff": False,
        "closedRescheduled": False, "closed": key == "closed", "overpaid": False,
    })


def _timeline(**dates: date | None) -> Body:
    out: Body = {}
    for event, day in dates.items():
        if day is None:
            continue
        out[f"{event}Date"] = day
        if event in ("submittedOn", "approvedOn", "activatedOn"):
            stem = event[:-2]
            out.update({f"{stem}{k}": v for k, v in _AUDIT.items()})
        if event == "actualDisbursement":
            out.update({f"disbursed{k}": v for k, v in _AUDIT.items()})
    return out


def _receipt(prefix: str, n: int) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    x, out = n * 2654435761 % (34 ** 8), ""
    for _ in range(8):
        x, r = divmod(x, 34)
        out += alphabet[r]
    return prefix + out


def _payment_detail(tx_id: int, currency: str, cash: bool = False) -> Body:
    ptype = CASH if cash else PAYMENT_TYPES[currency]
    out: Body = {"id": tx_id, "paymentType": {"id": ptype[0], "name": ptype[1]}}
    if not cash:
        out["receiptNumber"] = _receipt("S", tx_id)
    return out


# ------------------------------------------------------------------ savings

#: (date, kind, amount, reversed); kinds: deposit, withdrawal, interest, charge
SavingsTx = tuple[date, str, Decimal | str, bool]


def savings_account(*, id: int, client: Body, product: str, currency: str, status: str,
                    txs: Sequence[SavingsTx], today: date, on_hold: Decimal | str = "0",
                    external_id: str | None = None, opened: date | None = None) -> Body:
    """A ``GET /savingsaccounts/{id}?associations=transactions`` body.

    ``txs``: (date, kind, amount, reversed) oldest first; kinds: deposit,
    withdrawal, interest, charge.
    """
    product_id, product_name = SAVINGS_PRODUCTS[product]
    cur = CURRENCIES[currency]
    opened = opened or (txs[0][0] if txs else today - timedelta(days=30))
    txs = sorted(txs, key=lambda t: t[0])
    balance = Decimal(0)
    totals = {"deposit": Decimal(0), "withdrawal": Decimal(0), "interest": Decimal(0), "charge": Decimal(0)}
    rows = []
    for n, (day, kind, amount, reversed_) in enumerate(txs):
        tx_id = id * 100 + n + 1
        amount = Decimal(amount)
        sign = 1 if _SAVINGS_TX_TYPES[kind][4] == "CREDIT" else -1
        running = balance + sign * amount
        if not reversed_:
            balance, totals[kind] = running, totals[kind] + amount
        type_id, code, value, flag, entry = _SAVINGS_TX_TYPES[kind]
        row = {
            "id": tx_id,
            "transactionType": {"id": type_id, "code": code, "value": value,
                                **{f: f == flag for f in _SAVINGS_TX_FLAGS}},
            "entryType": entry, "accountId": id, "accountNo": f"{id:09d}", "date": day,
            "currency": cur,
        }
        if kind in ("deposit", "withdrawal"):
            row["paymentDetailData"] = _payment_detail(tx_id, currency, cash=n % 3 == 2)
        row.update({
            "amount": d6(amount), "runningBalance": d6(running), "reversed": bool(reversed_),
            "submittedOnDate": day, "interestedPostedAsOn": False, "submittedByUsername": "mifos",
        })
        if reversed_:
            row["note"] = "Duplicate mobile money callback, reversed"
        row.update({"isManualTransaction": False, "isReversal": False, "originalTransactionId": 0,
                    "lienTransaction": False, "releaseTransactionId": 0, "chargesPaidByData": []})
        rows.append(row)
    on_hold = Decimal(on_hold)
    active = status == "active"
    not_posted = _round(balance * Decimal("0.0013"), currency) if active and balance > 0 else Decimal(0)
    body = {
        "id": id, "accountNo": f"{id:09d}",
        "depositType": {"id": 100, "code": "depositAccountType.savingsDeposit", "value": "Savings"},
    }
    if external_id:
        body["externalId"] = external_id
    body.update({
        "clientId": client["id"], "clientName": client["displayName"],
        "savingsProductId": product_id, "savingsProductName": product_name,
        "fieldOfficerId": 2, "fieldOfficerName": "Otieno, Peter",
        "status": _savings_status(status),
        "subStatus": {"id": 0, "code": "SavingsAccountSubStatusEnum.none", "value": "None", "none": True,
                      "inactive": False, "dormant": False, "escheat": False, "block": False,
                      "blockCredit": False, "blockDebit": False},
        "timeline": _timeline(submittedOn=opened,
                              approvedOn=opened if status in ("approved", "active", "closed") else None,
                              activatedOn=opened if status in ("active", "closed") else None),
        "currency": cur,
        "nominalAnnualInterestRate": d6("3"),
        "interestCompoundingPeriodType": {
            "id": 4, "code": "savings.interest.period.savingsCompoundingInterestPeriodType.monthly",
            "value": "Monthly"},
        "interestPostingPeriodType": {
            "id": 4, "code": "savings.interest.posting.period.savingsPostingInterestPeriodType.monthly",
            "value": "Monthly"},
        "interestCalculationType": {"id": 1, "code": "savingsInterestCalculationType.dailybalance",
                                    "value": "Daily Balance"},
        "interestCalculationDaysInYearType": {"id": 365, "code": "savingsInterestCalculationDaysInYearType.days365",
                                              "value": "365 Days"},
        "minRequiredOpeningBalance": d6(_round(Decimal(500), currency)),
        "withdrawalFeeForTransfers": False, "allowOverdraft": False, "enforceMinRequiredBalance": False,
        "lienAllowed": False, "onHoldFunds": d6(on_hold), "withHoldTax": False,
    })
    if rows:
        body["lastActiveTransactionDate"] = txs[-1][0]
    body.update({"isDormancyTrackingActive": False, "savingsAmountOnHold": Z6})
    if status in ("active", "closed"):
        body["summary"] = {
            "currency": cur,
            "totalDeposits": d6(totals["deposit"]), "totalWithdrawals": d6(totals["withdrawal"]),
            "totalInterestEarned": d6(totals["interest"] + not_posted),
            "totalInterestPosted": d6(totals["interest"]), "accountBalance": d6(balance),
            "totalFeeCharge": d6(totals["charge"]), "totalPenaltyCharge": Z6,
            "totalOverdraftInterestDerived": Z6, "interestNotPosted": d6(not_posted),
            "lastInterestCalculationDate": today - timedelta(days=1),
            "availableBalance": d6(balance - on_hold),
            "interestPostedTillDate": date(today.year, today.month, 1) - timedelta(days=1),
        }
    body["transactions"] = list(reversed(rows))  # Fineract sends savings transactions newest first
    body["_short"] = product
    #: what built it, so the simulator can rebuild it after a write (see :func:`with_savings_withdrawal`)
    body["_args"] = dict(id=id, client=client, product=product, currency=currency, status=status, txs=list(txs),
                         on_hold=on_hold, external_id=external_id, opened=opened)
    return body


def _savings_history(balance: Decimal, currency: str, today: date, salt: int) -> list[SavingsTx]:
    """A plausible history ending at ``balance``: deposits, a withdrawal, a fee, interest."""
    if balance == 0:
        first = _round(Decimal(1000 + 250 * salt), currency)
        return [(today - timedelta(days=120 + salt), "deposit", first, False),
                (today - timedelta(days=40 + salt), "withdrawal", first, False)]
    interest = _round(balance * Decimal("0.004"), currency)
    fee = _round(Decimal(20) if currency == "KES" else Decimal(500 if currency == "TZS" else 100), currency)
    rest = balance - interest + fee
    a = _round(rest * Decimal("0.5"), currency)
    w = _round(rest * Decimal("0.2"), currency)
    b = rest - a + w
    return [
        (today - timedelta(days=150 + salt), "deposit", a, False),
        (today - timedelta(days=90 + salt % 7), "withdrawal", w, False),
        (today - timedelta(days=35 + salt % 5), "charge", fee, False),
        (today - timedelta(days=today.day), "interest", interest, False),
        (today - timedelta(days=1 + salt % 6), "deposit", b, False),
    ]


# ------------------------------------------------------------------ loans

#: One installment while :func:`loan_account` applies payments: number, period start ("from") and due
#: date, principal and interest due and paid, the day it was fully paid (``met``), and what was paid
#: in advance or late.
Period = TypedDict("Period", {
    "n": int, "from": date, "due": date, "p_due": Decimal, "i_due": Decimal, "p_paid": Decimal,
    "i_paid": Decimal, "met": date | None, "advance": Decimal, "late": Decimal,
})
#: (kind, date, amount, principal portion, interest portion); kinds: disbursement, repayment, accrual
LoanTxRow = tuple[str, date, Decimal, Decimal, Decimal]
#: (date, amount) of a repayment
Payment = tuple[date, Decimal]


def loan_account(*, id: int, client: Body, product: str, currency: str, principal: Decimal | str,
                 months: int, rate: Decimal | str, first_due: date, payments: Sequence[Payment], status: str,
                 today: date, external_id: str | None = None, loan_cycle: int = 1,
                 closed_on: date | None = None) -> Body:
    """A ``GET /loans/{id}?associations=repaymentSchedule,transactions`` body.

    Flat interest ``rate`` % per month, monthly installments from ``first_due``;
    ``payments`` (date, amount) are applied oldest first, interest before principal.
    """
    product_id, product_name = LOAN_PRODUCTS[product]
    cur = CURRENCIES[currency]
    principal = Decimal(principal)
    disbursed_on = add_months(first_due, -1)
    dues = [add_months(first_due, i) for i in range(months)]
    p_each = _round(principal / months, currency)
    i_each = _round(principal * Decimal(rate) / 100, currency)
    periods: list[Period] = []
    for n, due in enumerate(dues, start=1):
        p_due = p_each if n < months else principal - p_each * (months - 1)
        periods.append({"n": n, "from": disbursed_on if n == 1 else dues[n - 2], "due": due,
                        "p_due": p_due, "i_due": i_each, "p_paid": Decimal(0), "i_paid": Decimal(0),
                        "met": None, "advance": Decimal(0), "late": Decimal(0)})
    disbursed = status in ("active", "closed")
    tx_rows: list[LoanTxRow] = []
    if disbursed:
        tx_rows.append(("disbursement", disbursed_on, principal, Decimal(0), Decimal(0)))
        for day, amount in payments:
            left, p_part, i_part = Decimal(amount), Decimal(0), Decimal(0)
            for p in periods:
                if left <= 0:
                    break
                pay_i = min(left, p["i_due"] - p["i_paid"])
                left -= pay_i
                pay_p = min(left, p["p_due"] - p["p_paid"])
                left -= pay_p
                if pay_i or pay_p:
                    p["i_paid"] += pay_i
                    p["p_paid"] += pay_p
                    p_part, i_part = p_part + pay_p, i_part + pay_i
                    bucket: Literal["advance", "late"] | None = \
                        "advance" if day < p["due"] else "late" if day > p["due"] else None
                    if bucket:
                        p[bucket] += pay_i + pay_p
                    if p["p_paid"] == p["p_due"] and p["i_paid"] == p["i_due"]:
                        p["met"] = day
            tx_rows.append(("repayment", day, Decimal(amount), p_part, i_part))
        for p in periods:
            if p["due"] <= today:
                tx_rows.append(("accrual", p["due"], p["i_due"], Decimal(0), p["i_due"]))
    tx_rows.sort(key=lambda r: (r[1], {"disbursement": 0, "repayment": 1, "accrual": 2}[r[0]]))

    schedule = [_disbursement_row(disbursed_on, principal)]
    balance = principal
    for p in periods:
        balance -= p["p_due"]
        schedule.append(_period_row(p, balance, today))
    def owed(p: Period) -> Decimal:
        return p["p_due"] + p["i_due"] - p["p_paid"] - p["i_paid"]

    late = [p for p in periods if p["due"] < today and owed(p) > 0]
    paid_p = sum((p["p_paid"] for p in periods), Decimal(0))
    paid_i = sum((p["i_paid"] for p in periods), Decimal(0))
    interest = i_each * months
    expected = principal + interest
    repaid = paid_p + paid_i
    outstanding = expected - repaid if disbursed else expected
    overdue_p = sum((p["p_due"] - p["p_paid"] for p in late), Decimal(0))
    overdue_i = sum((p["i_due"] - p["i_paid"] for p in late), Decimal(0))

    body: Body = {"id": id, "accountNo": f"{id:09d}"}
    if external_id:
        body["externalId"] = external_id
    body.update({
        "status": _loan_status(status),
        "clientId": client["id"], "clientAccountNo": client["accountNo"], "clientName": client["displayName"],
    })
    if client.get("externalId"):
        body["clientExternalId"] = client["externalId"]
    body.update({
        "clientOfficeId": client["officeId"], "loanProductId": product_id, "loanProductName": product_name,
        "loanProductDescription": f"{product_name}, monthly repayments, flat interest",
        "isLoanProductLinkedToFloatingRate": False,
        "loanType": {"id": 1, "code": "accountType.individual", "value": "Individual"},
        "currency": cur, "principal": d6(principal), "approvedPrincipal": d6(principal),
        "proposedPrincipal": d6(principal), "netDisbursalAmount": d6(principal),
        "termFrequency": months,
        "termPeriodFrequencyType": {"id": 2, "code": "termFrequency.periodFrequencyType.months", "value": "Months"},
        "numberOfRepayments": months, "repaymentEvery": 1,
        "repaymentFrequencyType": {"id": 2, "code": "repaymentFrequency.periodFrequencyType.months", "value": "Months"},
        "interestRatePerPeriod": d6(rate),
        "interestRateFrequencyType": {"id": 2, "code": "interestRateFrequency.periodFrequencyType.months",
                                      "value": "Per month"},
        "annualInterestRate": d6(Decimal(rate) * 12), "isFloatingInterestRate": False,
        "amortizationType": {"id": 1, "code": "amortizationType.equal.installments", "value": "Equal installments"},
        "interestType": {"id": 1, "code": "interestType.flat", "value": "Flat"},
        "interestCalculationPeriodType": {"id": 1, "code": "interestCalculationPeriodType.same.as.repayment.period",
                                          "value": "Same as repayment period"},
        "allowPartialPeriodInterestCalculation": False,
        "transactionProcessingStrategyCode": "mifos-standard-strategy",
        "transactionProcessingStrategyName": "Penalties, Fees, Interest, Principal order",
        "syncDisbursementWithMeeting": False,
        "timeline": _timeline(
            submittedOn=disbursed_on - timedelta(days=3),
            approvedOn=disbursed_on - timedelta(days=3) if status in ("approved", "active", "closed") else None,
            expectedDisbursement=disbursed_on,
            actualDisbursement=disbursed_on if disbursed else None,
            closedOn=closed_on if status == "closed" else None,
            expectedMaturity=dues[-1],
        ),
    })
    if disbursed:
        body["summary"] = _loan_summary(cur, principal, paid_p, paid_i, interest, expected, repaid,
                                        outstanding, overdue_p, overdue_i, late, periods, today)
    body.update({"disbursementDetails": [], "feeChargesAtDisbursementCharged": Z6,
                 "loanProductCounter": loan_cycle, "multiDisburseLoan": False,
                 "canDefineInstallmentAmount": False, "canDisburse": status == "approved",
                 "emiAmountVariations": [], "canUseForTopup": False, "isTopup": False, "fraud": False,
                 "closureLoanId": 0, "inArrears": bool(late), "isNPA": False, "overdueCharges": [],
                 "daysInMonthType": {"id": 1, "code": "DaysInMonthType.actual", "value": "Actual"},
                 "daysInYearType": {"id": 1, "code": "DaysInYearType.actual", "value": "Actual"},
                 "isInterestRecalculationEnabled": False, "createStandingInstructionAtDisbursement": False,
                 "paidInAdvance": {"paidInAdvance": 0}, "isVariableInstallmentsAllowed": False,
                 "minimumGap": 0, "maximumGap": 0, "isEqualAmortization": False, "isRatesEnabled": False})
    if disbursed:
        body["delinquent"] = _delinquency(late, tx_rows, periods, today)
    body.update({"enableInstallmentLevelDelinquency": False,
                 "lastClosedBusinessDate": today - timedelta(days=1), "chargedOff": False,
                 "enableDownPayment": False,
                 "loanScheduleType": {"id": 0, "code": "CUMULATIVE", "value": "Cumulative"},
                 "loanScheduleProcessingType": {"id": 0, "code": "HORIZONTAL", "value": "Horizontal"}})
    body["repaymentSchedule"] = _schedule_totals(cur, principal, paid_p, interest, expected, repaid,
                                                 outstanding, periods, dues, disbursed_on, schedule)
    body["transactions"] = _loan_transactions(id, body, client, cur, tx_rows, principal, currency)
    body["_short"] = product
    body["_amount_paid"] = repaid
    body["_args"] = dict(id=id, client=client, product=product, currency=currency, principal=principal,
                         months=months, rate=rate, first_due=first_due, payments=list(payments), status=status,
                         external_id=external_id, loan_cycle=loan_cycle, closed_on=closed_on)
    return body


def _disbursement_row(day: date, principal: Decimal) -> Body:
    return {"dueDate": day, "principalDisbursed": d6(principal), "principalLoanBalanceOutstanding": d6(principal),
            "feeChargesDue": Z6, "feeChargesPaid": Z6, "totalOriginalDueForPeriod": Z6,
            "totalDueForPeriod": Z6, "totalPaidForPeriod": Z6, "totalActualCostOfLoanForPeriod": Z6,
            "downPaymentPeriod": False}


def _period_row(p: Period, balance: Decimal, today: date) -> Body:
    due = p["p_due"] + p["i_due"]
    paid = p["p_paid"] + p["i_paid"]
    row: Body = {"period": p["n"], "fromDate": p["from"], "dueDate": p["due"]}
    if p["met"]:
        row["obligationsMetOnDate"] = p["met"]
    row.update({
        "complete": p["met"] is not None, "daysInPeriod": (p["due"] - p["from"]).days,
        "principalOriginalDue": d6(p["p_due"]), "principalDue": d6(p["p_due"]),
        "principalPaid": d6(p["p_paid"]), "principalWrittenOff": Z6,
        "principalOutstanding": d6(p["p_due"] - p["p_paid"]), "principalLoanBalanceOutstanding": d6(balance),
        "interestOriginalDue": d6(p["i_due"]), "interestDue": d6(p["i_due"]), "interestPaid": d6(p["i_paid"]),
        "interestWaived": Z6, "interestWrittenOff": Z6, "interestOutstanding": d6(p["i_due"] - p["i_paid"]),
        "feeChargesDue": Z6, "feeChargesPaid": Z6, "feeChargesWaived": Z6, "feeChargesWrittenOff": Z6,
        "feeChargesOutstanding": Z6, "penaltyChargesDue": Z6, "penaltyChargesPaid": Z6,
        "penaltyChargesWaived": Z6, "penaltyChargesWrittenOff": Z6, "penaltyChargesOutstanding": Z6,
        "totalOriginalDueForPeriod": d6(due), "totalDueForPeriod": d6(due), "totalPaidForPeriod": d6(paid),
        "totalPaidInAdvanceForPeriod": d6(p["advance"]), "totalPaidLateForPeriod": d6(p["late"]),
        "totalWaivedForPeriod": Z6, "totalWrittenOffForPeriod": Z6,
        "totalOutstandingForPeriod": d6(due - paid),
        "totalOverdue": d6(due - paid if p["due"] < today else 0),
        "totalActualCostOfLoanForPeriod": d6(p["i_due"]), "totalInstallmentAmountForPeriod": d2(due),
        "totalCredits": Z6, "totalAccruedInterest": d6(p["i_due"] if p["due"] <= today else 0),
        "downPaymentPeriod": False,
    })
    return row


_SUMMARY_ZERO_KEYS = [
    "principalAdjustments", "principalWrittenOff", "interestWaived", "interestWrittenOff",
    "feeChargesCharged", "feeAdjustments", "feeChargesDueAtDisbursementCharged", "feeChargesPaid",
    "feeChargesWaived", "feeChargesWrittenOff", "feeChargesOutstanding", "feeChargesOverdue",
    "penaltyChargesCharged", "penaltyAdjustments", "penaltyChargesPaid", "penaltyChargesWaived",
    "penaltyChargesWrittenOff", "penaltyChargesOutstanding", "penaltyChargesOverdue",
]


def _loan_summary(cur: CurrencyData, principal: Decimal, paid_p: Decimal, paid_i: Decimal, interest: Decimal,
                  expected: Decimal, repaid: Decimal, outstanding: Decimal, overdue_p: Decimal,
                  overdue_i: Decimal, late: list[Period], periods: list[Period], today: date) -> Body:
    s = {k: Z6 for k in _SUMMARY_ZERO_KEYS}
    not_due_interest = sum((p["i_due"] - p["i_paid"] for p in periods if p["due"] >= today), Decimal(0))
    out: Body = {
        "currency": cur, "principalDisbursed": d6(principal), "principalAdjustments": Z6,
        "principalPaid": d6(paid_p), "principalWrittenOff": Z6, "principalOutstanding": d6(principal - paid_p),
        "principalOverdue": d6(overdue_p), "interestCharged": d6(interest), "interestPaid": d6(paid_i),
        "interestWaived": Z6, "interestWrittenOff": Z6, "interestOutstanding": d6(interest - paid_i),
        "interestOverdue": d6(overdue_i),
    }
    for k in _SUMMARY_ZERO_KEYS[4:]:
        out[k] = s[k]
    out.update({
        "totalExpectedRepayment": d6(expected), "totalRepayment": d6(repaid),
        "totalExpectedCostOfLoan": d6(interest), "totalCostOfLoan": d6(paid_i), "totalWaived": Z6,
        "totalWrittenOff": Z6, "totalOutstanding": d6(outstanding), "totalOverdue": d6(overdue_p + overdue_i),
        "totalRecovered": Z6,
    })
    if late:
        out["overdueSinceDate"] = late[0]["due"]
    for k in ["totalMerchantRefund", "totalMerchantRefundReversed", "totalPayoutRefund",
              "totalPayoutRefundReversed", "totalGoodwillCredit", "totalGoodwillCreditReversed",
              "totalChargeAdjustment", "totalChargeAdjustmentReversed", "totalChargeback",
              "totalCreditBalanceRefund", "totalCreditBalanceRefundReversed"]:
        out[k] = Z6
    out.update({"totalRepaymentTransaction": d6(repaid), "totalRepaymentTransactionReversed": Z6,
                "totalInterestPaymentWaiver": Z6, "totalInterestRefund": Z6,
                "totalUnpaidPayableDueInterest": d6(overdue_i),
                "totalUnpaidPayableNotDueInterest": d6(not_due_interest)})
    return out


def _delinquency(late: list[Period], tx_rows: list[LoanTxRow], periods: list[Period], today: date) -> Body:
    repayments = [r for r in tx_rows if r[0] == "repayment"]
    upcoming = next((p["due"] for p in periods if p["met"] is None), None)
    out: Body = {"availableDisbursementAmount": Z6}
    if late:
        days = (today - late[0]["due"]).days
        amount = sum((p["p_due"] + p["i_due"] - p["p_paid"] - p["i_paid"] for p in late), Decimal(0))
        out.update({"pastDueDays": days, "nextPaymentDueDate": late[0]["due"], "delinquentDays": days,
                    "delinquentDate": late[0]["due"], "delinquentAmount": d6(amount)})
    else:
        out.update({"pastDueDays": 0, "delinquentDays": 0, "delinquentAmount": Z6})
        if upcoming:
            out["nextPaymentDueDate"] = upcoming
    if repayments:
        last = repayments[-1]
        out.update({"lastPaymentDate": last[1], "lastPaymentAmount": d6(last[2]),
                    "lastRepaymentDate": last[1], "lastRepaymentAmount": d6(last[2])})
    out.update({"delinquentPrincipal": d6(sum((p["p_due"] - p["p_paid"] for p in late), Decimal(0))),
                "delinquentInterest": d6(sum((p["i_due"] - p["i_paid"] for p in late), Decimal(0))),
                "delinquentFee": Z6, "delinquentPenalty": Z6})
    return out


def _schedule_totals(cur: CurrencyData, principal: Decimal, paid_p: Decimal, interest: Decimal,
                     expected: Decimal, repaid: Decimal, outstanding: Decimal, periods: list[Period],
                     dues: list[date], disbursed_on: date, rows: list[Body]) -> Body:
    return {
        "currency": cur, "loanTermInDays": (dues[-1] - disbursed_on).days,
        "totalPrincipalDisbursed": d2(principal), "totalPrincipalExpected": d2(principal),
        "totalPrincipalPaid": d2(paid_p), "totalInterestCharged": d2(interest),
        "totalFeeChargesCharged": d2(0), "totalPenaltyChargesCharged": d2(0), "totalWaived": d2(0),
        "totalWrittenOff": d2(0), "totalRepaymentExpected": d2(expected), "totalRepayment": d2(repaid),
        "totalPaidInAdvance": d2(sum((p["advance"] for p in periods), Decimal(0))),
        "totalPaidLate": d2(sum((p["late"] for p in periods), Decimal(0))),
        "totalOutstanding": d2(outstanding), "totalCredits": d2(0),
        "periods": rows,
    }


def _loan_transactions(loan_id: int, body: Body, client: Body, cur: CurrencyData, tx_rows: list[LoanTxRow],
                       principal: Decimal, currency: str) -> list[Body]:
    out: list[Body] = []
    balance = principal
    for n, (kind, day, amount, p_part, i_part) in enumerate(tx_rows, start=1):
        tx_id = loan_id * 100 + n
        if kind == "repayment":
            balance -= p_part
        type_id, code, value, flag = _LOAN_TX_TYPES[kind]
        row: Body = {"id": tx_id, "loanId": loan_id}
        if body.get("externalId"):
            row["externalLoanId"] = body["externalId"]
        row.update({"officeId": client["officeId"], "officeName": client["officeName"],
                    "type": {"id": type_id, "code": code, "value": value,
                             **{f: f == flag for f in _LOAN_TX_FLAGS}},
                    "date": day, "currency": cur})
        if kind != "accrual":
            row["paymentDetailData"] = _payment_detail(tx_id, currency)
        row["amount"] = d6(amount)
        if kind == "disbursement":
            row["netDisbursalAmount"] = d6(amount)
        row.update({"principalPortion": d6(p_part), "interestPortion": d6(i_part), "feeChargesPortion": Z6,
                    "penaltyChargesPortion": Z6, "overpaymentPortion": Z6, "unrecognizedIncomePortion": Z6,
                    "externalId": f"{loan_id:08x}-{tx_id:04x}-4000-8000-{n:012x}",
                    "outstandingLoanBalance": d6(balance if kind != "accrual" else 0),
                    "submittedOnDate": day + timedelta(days=1 if kind == "accrual" else 0),
                    "manuallyReversed": False, "loanChargePaidByList": [], "transactionRelations": []})
        out.append(row)
    return out


def _situation(kind: str, months: int, today: date, installment: Decimal,
               currency: str) -> tuple[date, list[Payment]]:
    """First due date and payments giving each loan situation."""
    if kind == "ontime":  # k installments paid a day early, next due in 3 days
        k = max(1, months // 3)
        first = add_months(today + timedelta(days=3), -k)
        return first, [(add_months(first, i) - timedelta(days=1), installment) for i in range(k)]
    if kind == "arrears":  # 2 paid, third 5 days late and partly paid
        first = add_months(today - timedelta(days=5), -2)
        pays = [(add_months(first, i), installment) for i in range(2)]
        return first, pays + [(today - timedelta(days=4), _round(installment / 2, currency))]
    if kind == "deep":  # 1 paid, then three missed
        first = add_months(today - timedelta(days=12), -3)
        return first, [(first, installment)]
    if kind == "today":
        first = add_months(today, -1)
        return first, [(first, installment)]
    if kind == "fresh":
        return today + timedelta(days=20), []
    if kind == "paid":
        first = add_months(today, -months - 3)
        return first, [(add_months(first, i) - timedelta(days=2), installment) for i in range(months)]
    raise ValueError(kind)


# ------------------------------------------------------------------ clients


def client_record(*, id: int, first: str, middle: str, last: str, office: int, mobile: str | None,
                  status: str, today: date, external_id: str | None = None,
                  savings_id: int | None = None) -> Body:
    """A ``GET /clients/{id}`` body."""
    names = [n for n in (first, middle, last) if n]
    activated = today - timedelta(days=200 + id * 3)
    body: Body = {"id": id, "accountNo": f"{id:09d}"}
    if external_id:
        body["externalId"] = external_id
    body.update({
        "status": _status(CLIENT_STATUS, status),
        "subStatus": {"active": False, "mandatory": False},
        "active": status == "active",
    })
    if status in ("active", "closed"):
        body["activationDate"] = activated
    body["firstname"] = first
    if middle:
        body["middlename"] = middle
    body.update({"lastname": last, "displayName": " ".join(names)})
    if mobile:
        body["mobileNo"] = mobile
    body.update({
        "dateOfBirth": date(1970 + id % 30, 1 + id % 12, 1 + id % 28),
        "gender": {"id": 22 if id % 2 else 23, "name": "Female" if id % 2 else "Male", "active": False,
                   "mandatory": False},
        "clientType": {"id": 31, "name": "Individual", "active": False, "mandatory": False},
        "clientClassification": {"active": False, "mandatory": False},
        "isStaff": False, "officeId": office, "officeName": OFFICES[office],
        "staffId": 2, "staffName": "Otieno, Peter",
        "timeline": _timeline(submittedOn=activated - timedelta(days=2),
                              activatedOn=activated if status in ("active", "closed") else None),
    })
    if status == "closed":
        body["timeline"]["closedOnDate"] = today - timedelta(days=30)
    if savings_id:
        body["savingsAccountId"] = savings_id
    body["groups"] = []  # ClientData.groups: retrieveOne fills it (ParentGroupsMapper), empty list if none
    body.update({"legalForm": {"id": 1, "code": "legalFormType.person", "value": "PERSON"},
                 "clientNonPersonDetails": {"constitution": {"active": False, "mandatory": False},
                                            "mainBusinessLine": {"active": False, "mandatory": False}}})
    return body


def _grace(today: date, data: DataSet) -> None:
    """Client 1 mirrors the shared samples (loan 29, savings 42) at any business date."""
    client = client_record(id=1, first="Grace", middle="Wanjiru", last="Kamau", office=1,
                           mobile="254700000101", status="active", today=today,
                           external_id="NID-28791034", savings_id=42)
    data["clients"][1] = client
    t = lambda days: today - timedelta(days=days)  # noqa: E731
    txs = [(t(171), "deposit", "5000", False), (t(96), "deposit", "2500", False),
           (t(75), "withdrawal", "400", False), (t(31), "charge", "20", False),
           (t(20), "interest", "57.5", False), (t(10), "deposit", "3000", False),
           (t(3), "deposit", "2000", True), (t(2), "withdrawal", "1500", False)]
    data["savings"][42] = savings_account(id=42, client=client, product="VS", currency="KES", status="active",
                                          txs=txs, today=today, on_hold="1000", external_id="SV-2023-0042")
    data["savings"][43] = savings_account(id=43, client=client, product="JS", currency="KES", status="pending",
                                          txs=[], today=today, opened=t(1))
    first = add_months(today - timedelta(days=5), -2)
    data["loans"][29] = loan_account(
        id=29, client=client, product="BF6", currency="KES", principal="12000", months=6, rate="1",
        first_due=first, status="active", today=today, external_id="LN-2024-0029", loan_cycle=2,
        payments=[(first - timedelta(days=1), Decimal("2120")), (add_months(first, 1), Decimal("2120")),
                  (today - timedelta(days=4), Decimal("1000"))])
    data["loans"][17] = loan_account(
        id=17, client=client, product="BF6", currency="KES", principal="5000", months=6, rate="1",
        first_due=add_months(today, -8), status="closed", today=today,
        payments=[(add_months(today, -8 + i), Decimal("883.33") if i < 5 else Decimal("883.35"))
                  for i in range(6)], closed_on=add_months(today, -3))
    data["loans"][31] = loan_account(
        id=31, client=client, product="SFL", currency="KES", principal="20000", months=10, rate="1.5",
        first_due=today + timedelta(days=42), payments=[], status="pending", today=today)


def _term_deposit(today: date, data: DataSet) -> None:
    """Kevin (client 15, one savings account, one active loan) also holds a fixed deposit, savings id 90.

    ``GET /clients/{id}/accounts`` lists it among ``savingsAccounts`` with ``depositType`` 200
    (``DepositAccountType.FIXED_DEPOSIT``); Fineract refuses to debit it, so repayments never offer it.
    """
    acc = savings_account(id=90, client=data["clients"][15], product="VS", currency="KES", status="active",
                          txs=[(today - timedelta(days=60), "deposit", "50000", False)], today=today)
    acc.update(depositType={"id": 200, "code": "depositAccountType.fixedDeposit", "value": "Fixed Deposit"},
               savingsProductId=12, savingsProductName="Fixed Deposit 12M", _short="FD12")
    data["savings"][90] = acc


def build(today: date | None = None) -> Body:
    """The whole data set: ``{"clients", "savings", "loans", "groups", "centers", "offices"}``, keyed by id."""
    # the business date of the demo tenant (Africa/Nairobi, CONVO_TIMEZONE's default), not the machine's:
    # the gateway says "due today" by the MFI's date, so the two agree around midnight
    today = today or datetime.now(ZoneInfo("Africa/Nairobi")).date()
    data: DataSet = {"clients": {}, "savings": {}, "loans": {}, "offices": dict(OFFICES), "today": today}
    _grace(today, data)
    next_savings, next_loan = 100, 200
    for cid, first, middle, last, office, mobile, status, accounts in _CLIENTS:
        client = client_record(id=cid, first=first, middle=middle, last=last, office=office, mobile=mobile,
                               status=status, today=today, external_id=f"NID-{31000000 + cid * 7919}")
        data["clients"][cid] = client
        for spec in accounts:
            if spec[0] == "sav":
                _, product, currency, balance, acc_status = spec
                history = [] if acc_status in ("pending", "rejected") else \
                    _savings_history(Decimal(balance), currency, today, salt=next_savings % 11)
                data["savings"][next_savings] = savings_account(
                    id=next_savings, client=client, product=product, currency=currency, status=acc_status,
                    txs=history, today=today, opened=None if history else today - timedelta(days=4))
                client.setdefault("savingsAccountId", next_savings)
                next_savings += 1
            else:
                _, product, currency, principal, months, situation, acc_status = spec
                rate = Decimal("1.5") if currency == "KES" else Decimal("2")
                installment = _round(Decimal(principal) / months, currency) + \
                    _round(Decimal(principal) * rate / 100, currency)
                first_due, payments = _situation(situation, months, today, installment, currency)
                if situation == "paid":  # settle exactly, last payment takes the rounding
                    total = Decimal(principal) + _round(Decimal(principal) * rate / 100, currency) * months
                    payments[-1] = (payments[-1][0], total - installment * (months - 1))
                data["loans"][next_loan] = loan_account(
                    id=next_loan, client=client, product=product, currency=currency, principal=principal,
                    months=months, rate=rate, first_due=first_due, payments=payments, status=acc_status,
                    today=today, closed_on=payments[-1][0] if payments and acc_status == "closed" else None)
                next_loan += 1
    _term_deposit(today, data)
    _groups_and_centers(today, data)
    return data
