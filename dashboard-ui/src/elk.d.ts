declare module "elkjs/lib/elk.bundled.js" {
  const ELK: any;
  export default ELK;
}
