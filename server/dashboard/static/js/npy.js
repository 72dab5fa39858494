// Reading a NumPy .npy file of a packed structured array (the recordings' events.npy) into
// columns, for the recording preview.

const SIZES = { u1: 1, i1: 1, u2: 2, i2: 2, u4: 4, i4: 4, u8: 8, i8: 8, f4: 4, f8: 8 };

export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  const fields = [...header.matchAll(/\('(\w+)',\s*'([<>|]?)(\w\d)'\)/g)].map((m) => ({ name: m[1], type: m[3] }));
  const count = Number((/'shape':\s*\((\d+),?\)/.exec(header) || [0, 0])[1]);
  let offset = 0;
  for (const field of fields) {
    if (!(field.type in SIZES)) throw new Error(`unsupported field type ${field.type}`);
    field.offset = offset;
    offset += SIZES[field.type];
  }
  const itemsize = offset;
  const data = start + headerLength;
  const columns = {};
  for (const field of fields) {
    const column = new Float64Array(count);
    for (let i = 0; i < count; i += 1) {
      const at = data + i * itemsize + field.offset;
      switch (field.type) {
        case "u1": column[i] = view.getUint8(at); break;
        case "u2": column[i] = view.getUint16(at, true); break;
        case "u4": column[i] = view.getUint32(at, true); break;
        case "u8": column[i] = Number(view.getBigUint64(at, true)); break;
        default: column[i] = Number.NaN;
      }
    }
    columns[field.name] = column;
  }
  return { count, columns };
}
