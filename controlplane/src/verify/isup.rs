//! Numbers in ISUP address form (nature of address, numbering plan, BCD digits).
