//! CRC-64/ECMA-182 as OpenIGTLink uses it: polynomial 0x42F0E1EBA9EA3693, initial value
//! 0, no reflection, no final XOR, over the whole body.

const POLY: u64 = 0x42F0_E1EB_A9EA_3693;

const TABLE: [u64; 256] = build_table();

const fn build_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u64) << 56;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & (1 << 63) != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-64/ECMA-182 of `data` (table-driven, one byte per step).
pub fn crc64(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |crc, &byte| {
        TABLE[((crc >> 56) as u8 ^ byte) as usize] ^ (crc << 8)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc64(b"123456789"), 0x6C40_DF5F_0B49_7347);
        assert_eq!(super::crc64(b""), 0);
    }
}
